"""The training data of a run: its image–text stream, and the text-pair stream of a method that
reads one, as one per-host iterator of batches plus the report of the records they skipped.

The trainer says what the method reads (`StreamPlan`) and how the model encodes records
(`Encoding`); everything between a source spec and a host batch is built here. A frozen-tower
cache (`clipjax.train.frozen_cache`, which needs the model) is passed in as its tables.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np
from etils import epath

from clipjax.data.bad_record_log import BadRecordLog
from clipjax.data.batch_plan import BatchPlan
from clipjax.data.builder import make_source
from clipjax.data.pipeline import (
  PrepareExample,
  PrepareText,
  TwoStreams,
  build_dataset,
  synthetic_text_records,
)
from clipjax.data.records import BAD_REASONS
from clipjax.data.views import CachedInputs, MapRecords, OneQAPerSample


@dataclasses.dataclass(frozen=True)
class Encoding:
  """How one model reads records: its image size and preprocessing (`make_image_transform`'s
  options, a NaFlex tower's patch size and sequence length among them), its tokenizer (the CLIP BPE, or the HF tokenizer in `tokenizer_dir`, with open_clip's
  `tokenizer_kwargs`) and context, and whether its text tower takes ids cut after the last
  end-of-text token (`trimmable`; not a bidirectional tower, which reads the padding)."""
  image_size: int
  preprocess: dict[str, Any]
  context_length: int = 77
  tokenizer_dir: str | None = None
  tokenizer_kwargs: tuple[tuple[str, Any], ...] = ()
  trimmable: bool = True

  @classmethod
  def of(cls, model_cfg) -> "Encoding":
    """The encoding of a `clipjax.models.configs.CLIPConfig`."""
    text = model_cfg.text
    return cls(model_cfg.vision.image_size, model_cfg.transform_options(),
               text.context_length, text.tokenizer_dir, text.tokenizer_kwargs, text.trimmable)


@dataclasses.dataclass(frozen=True)
class StreamPlan:
  """What a method reads. text_fields: the token fields of the image–text batch; one_qa: a
  record's dialogue is one random question–answer pair per epoch (else all of it in one
  text); text_pairs: the `data.text` stream's token fields (query / positive / negatives),
  empty for a method without one. With text pairs a step's batch is
  `{"text": text-pair batch, "image_text": image–text batch}`, else the image–text batch."""
  text_fields: tuple[str, ...] = ("caption",)
  one_qa: bool = False
  text_pairs: tuple[str, ...] = ()


def image_text_source(data: Any):
  """The `data.train` source, its `data.caption_field` read as the caption (e.g. long
  captions in the jina-style stages 2 and 3)."""
  source = make_source(data.train)
  field = data.caption_field
  if field != "caption":
    source = MapRecords(source, functools.partial(_caption_from, field))
  return source


def _caption_from(field: str, record: dict, index: int) -> dict:
  del index
  return dict(record, caption=record.get(field) or "")


def read_threads(data: Any, spec: Mapping[str, Any]) -> int | None:
  """data.read_threads; by default (-1) grain's choice, except for synthetic scenes read in
  the training process: drawing them holds the GIL, so reader threads only contend with each
  other and the step (a batch of 32: 29 ms with none, 41 ms with 16; docs/benchmarks.md)."""
  threads = data.read_threads
  if threads is None or threads < 0:
    return 0 if spec["kind"] == "synthetic" else None
  return threads


def _bad_window(data: Any, source) -> int:
  return min(data.bad_window or len(source), len(source))


class TrainingStreams:
  """This host's batches, and the report of the records skipped on the way.

  `iterator` is the grain iterator whose position goes into checkpoints; `next_batch(step)`
  takes its next batch without the bookkeeping entries, adds their counts to `bad` (by
  reason, `BAD_REASONS`) and names each new bad record once in WORKDIR/bad_records.jsonl."""

  def __init__(self, dataset, num_samples: int, workdir: epath.Path):
    self.iterator = iter(dataset)
    self.num_samples = num_samples
    self.bad = np.zeros(len(BAD_REASONS), np.int64)
    self.log = BadRecordLog(workdir)

  def next_batch(self, step: int) -> dict:
    batch = next(self.iterator)
    self.bad += batch.pop("bad_records")
    self.log.add(step, batch.pop("bad_examples", []))
    batch.pop("mask", None)
    return batch

  def bad_counts(self) -> dict[str, int]:
    """The non-zero counts by reason."""
    return {r: int(n) for r, n in zip(BAD_REASONS, self.bad) if n}

  def summary(self) -> str | None:
    """One line for the end of a run that skipped records, or None."""
    if not self.bad.any():
      return None
    counts = ", ".join(f"{r} {n}" for r, n in self.bad_counts().items())
    return (f"skipped {int(self.bad.sum())} records ({counts}); each one is named in "
            f"{self.log.path}")

  def close(self) -> None:
    self.log.close()
    if hasattr(self.iterator, "close"):
      self.iterator.close()


def training_streams(data: Any, plan: StreamPlan, encoding: Encoding,
                     batches: BatchPlan, *, seed: int, workdir: epath.Path, source=None,
                     cached: tuple[Any, np.ndarray | None] | None = None,
                     cached_prefix: str = "") -> TrainingStreams:
  """The streams of a run's `data` options (`clipjax.options.DataOptions`) for this host.

  batches: the run's batch plan (this host's share of the image–text and text-pair batches;
  a NaFlex image tower's batches by sequence length under a token budget). source:
  `image_text_source(data)` when the caller already made it. cached: the frozen-tower tables
  (images, captions or None): records then carry their embedding rows instead of pixels (and
  caption ids); with cached_prefix ("teacher_") beside them."""
  source = image_text_source(data) if source is None else source
  fields = plan.text_fields
  if cached is not None:
    images, captions = cached
    source = CachedInputs(source, images, captions=captions is not None, prefix=cached_prefix)
    if captions is not None and not cached_prefix:
      fields = tuple(f for f in fields if f != "caption")
  if "dialogue" in fields and plan.one_qa:
    source = OneQAPerSample(source)
  prepare = PrepareExample(
      encoding.image_size, train=data.augment, text_fields=fields,
      context_length=encoding.context_length, with_image=cached is None or bool(cached_prefix),
      hf_tokenizer=encoding.tokenizer_dir, tokenizer_kwargs=encoding.tokenizer_kwargs,
      preprocess=encoding.preprocess,
      max_image_pixels=data.max_image_pixels)
  dataset = build_dataset(source, prepare, batch_size=batches.per_host, seed=seed,
                          num_workers=data.num_workers,
                          read_threads=read_threads(data, data.train),
                          bad_window=_bad_window(data, source), lengths=batches.lengths)
  if plan.text_pairs:
    texts = make_source(data.text)
    if data.text["kind"] == "synthetic":
      texts = synthetic_text_records(texts)
    prepare_text = PrepareText(encoding.context_length, data.num_negatives,
                               encoding.tokenizer_dir, encoding.tokenizer_kwargs)
    dataset = TwoStreams(
        build_dataset(texts, prepare_text,
                      batch_size=batches.text_per_host,
                      seed=seed + 1, num_workers=data.num_workers,
                      read_threads=read_threads(data, data.text),
                      bad_window=_bad_window(data, texts)),
        dataset)
  return TrainingStreams(dataset, len(source), workdir)
