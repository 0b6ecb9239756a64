"""Batching for the grain pipelines: fixed-size batches that skip and count bad records
(`SkipCountBatch`), and NaFlex batches under a token budget (`LengthBatches`).

NaFlex: each batch has one sequence length, drawn per batch from a list, and as many rows as
the budget holds at that length: `token_budget // L` rows per device (every batch costs about
the same compute), images prepared at `max_num_patches = L`; the step compiles once per
length, never per batch. The length of the pipeline's b-th batch is a pure function of
(seed, b) — uniform over the lengths, as open_clip's NaFlex loader samples them — so every host
draws the same length for the same step (global arrays stay rectangular) and a restored
iterator continues the same sequence. Records are prepared inside the batching (the length
is known only there), in the data worker processes; bad records are skipped and counted as
in fixed-size batches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import grain
import jax
import numpy as np

from clipjax.data.records import BAD_REASONS, BadRecord
from clipjax.errors import DataError

# (index, count) of this data worker process among its pipeline's workers; (0, 1) in the
# training process. grain reads the workers' batches in turn, so a worker's k-th batch is the
# pipeline's (k · count + index)-th (`LengthBatches` draws each batch's length by it).
WORKER = [0, 1]


class SkipCountBatch(grain.IterDataset):
  """Batches good examples to a fixed size; counts skipped BadRecords by reason per batch.

  Every batch has `mask` (bool [B], which rows are real), `bad_records` (int64
  [len(BAD_REASONS)], skipped since the previous batch) and `bad_examples` (a list of
  (reason, detail) strings of those records, for the logs). At the end of a finite stream one
  last batch carries what is pending: the remaining examples padded and masked
  (`pad_remainder=True`, for evaluation), or an all-masked batch whose counts include the
  dropped remainder (`pad_remainder=False`), so nothing is dropped without being counted.

  `bad_window`: raise `DataError` (counts by reason, examples) once that many records in a
  row were bad, instead of looking for a good one forever in a repeating all-bad source.
  """

  def __init__(self, parent: grain.IterDataset, batch_size: int, pad_remainder: bool = False,
               bad_window: int | None = None):
    super().__init__(parent)
    self.batch_size, self.pad_remainder, self.bad_window = batch_size, pad_remainder, bad_window

  def __iter__(self):
    return _SkipCountBatchIterator(self._parent.__iter__(), self.batch_size, self.pad_remainder,
                                   self.bad_window)


class _SkipCountBatchIterator(grain.DatasetIterator):

  def __init__(self, parent, batch_size: int, pad_remainder: bool, bad_window: int | None):
    super().__init__(parent)
    self._batch_size, self._pad, self._bad_window = batch_size, pad_remainder, bad_window
    self._template = None  # zeros shaped like an example, for padding
    self._exhausted = False
    self._run = np.zeros(len(BAD_REASONS), np.int64)  # bad records since the last good one
    self._run_examples: list[tuple[str, str]] = []

  def _count_bad(self, record: BadRecord) -> None:
    self._run[BAD_REASONS.index(record.reason)] += 1
    if len(self._run_examples) < 3:
      self._run_examples.append((record.reason, record.detail))
    if self._bad_window and self._run.sum() >= self._bad_window:
      counts = ", ".join(f"{r} {n}" for r, n in zip(BAD_REASONS, self._run) if n)
      examples = "; ".join(f"{r}: {d}" for r, d in self._run_examples)
      raise DataError(f"no usable record in {int(self._run.sum())} records of the data source "
                      f"in a row ({counts}); e.g. {examples}")

  def _begin_batch(self) -> int:
    """The size of the next batch (a hook: `data.length_batches` varies it)."""
    return self._batch_size

  def _convert(self, element):
    """An element of the parent as it goes into the batch (a hook, see `_begin_batch`)."""
    return element

  def __next__(self) -> dict[str, Any]:
    if self._exhausted:
      raise StopIteration
    size = self._begin_batch()
    good, bad, examples = [], np.zeros(len(BAD_REASONS), np.int64), []
    while len(good) < size:
      try:
        element = self._convert(next(self._parent))
      except StopIteration:
        self._exhausted = True
        if self._template is None and not good:
          raise  # nothing was ever decoded here: no shapes to pad with
        break
      if isinstance(element, BadRecord):
        bad[BAD_REASONS.index(element.reason)] += 1
        examples.append((element.reason, element.detail))
        self._count_bad(element)
      else:
        good.append(element)
        self._run[:] = 0
        self._run_examples.clear()
        if self._template is None:
          self._template = jax.tree.map(np.zeros_like, element)
    if self._exhausted:
      if not good and not bad.any():
        raise StopIteration
      if not self._pad:
        bad[BAD_REASONS.index("remainder")] += len(good)
        good = []
    mask = np.zeros(size, bool)
    mask[:len(good)] = True
    good += [self._template] * (size - len(good))
    batch = jax.tree.map(lambda *rows: np.stack(rows), *good)  # NaFlex images are dicts
    batch.update(mask=mask, bad_records=bad, bad_examples=examples)
    return batch

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)
    self._exhausted = False



@dataclasses.dataclass(frozen=True)
class LengthPlan:
  """lengths: the sequence lengths (patches per image); rows: this host's batch rows at each;
  seed: draws the length of each batch."""
  lengths: tuple[int, ...]
  rows: tuple[int, ...]
  seed: int = 0

  def length_of(self, batch_index: int) -> int:
    """The length of the pipeline's `batch_index`-th batch."""
    draw = np.random.default_rng([self.seed, batch_index]).integers(len(self.lengths))
    return self.lengths[int(draw)]

  def rows_at(self, length: int) -> int:
    return self.rows[self.lengths.index(length)]


def plan_lengths(lengths, token_budget: int, local_devices: int, *, seed: int = 0,
                 multiple: int = 1) -> LengthPlan:
  """A LengthPlan of `token_budget` patches per device per batch on `local_devices` devices
  of this host; rows per device are rounded down to a multiple of `multiple` (GradCache's
  sub-batches). Raises ValueError naming a length the budget cannot hold."""
  lengths = tuple(sorted({int(n) for n in lengths}))
  if not lengths or lengths[0] < 1:
    raise ValueError(f"NaFlex sequence lengths must be positive patch counts, got {lengths}")
  per_device = [(token_budget // n) // multiple * multiple for n in lengths]
  short = [n for n, rows in zip(lengths, per_device) if rows < 1]
  if short:
    raise ValueError(f"a token budget of {token_budget} patches per device holds no "
                     f"{'batch' if multiple == 1 else f'{multiple} sub-batch rows'} at length "
                     f"{short[0]}; raise data.naflex.token_budget to at least "
                     f"{short[0] * multiple}")
  return LengthPlan(lengths, tuple(r * local_devices for r in per_device), seed)


class LengthBatches(grain.IterDataset):
  """Raw records -> prepared batches of the plan's lengths (a NaFlex pipeline's batching)."""

  def __init__(self, parent: grain.IterDataset, prepare: Callable, plan: LengthPlan,
               bad_window: int | None = None):
    super().__init__(parent)
    self.prepare, self.plan, self.bad_window = prepare, plan, bad_window

  def __iter__(self):
    return _LengthBatchIterator(self._parent.__iter__(), self.prepare, self.plan,
                                self.bad_window)


class _LengthBatchIterator(_SkipCountBatchIterator):

  def __init__(self, parent, prepare: Callable, plan: LengthPlan, bad_window):
    super().__init__(parent, 0, pad_remainder=False, bad_window=bad_window)
    self._prepare, self._plan = prepare, plan
    self._batches, self._length = 0, plan.lengths[0]

  def _begin_batch(self) -> int:
    index, count = WORKER
    self._length = self._plan.length_of(self._batches * count + index)
    self._batches += 1
    return self._plan.rows_at(self._length)

  def _convert(self, element):
    out = self._prepare(element, length=self._length)
    if isinstance(out, dict):  # a cached image tower's rows: one per length, take this one's
      for key in ("image_embedding", "teacher_image_embedding"):
        if key in out and out[key].ndim == 2:
          out[key] = out[key][self._plan.lengths.index(self._length)]
    return out

  def get_state(self) -> dict[str, Any]:
    return {"records": self._parent.get_state(), "batches": self._batches}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["records"])
    self._batches = int(state["batches"])
    self._exhausted = False
