"""What a training run logs: its metrics (progress bar, `metrics.jsonl`, TensorBoard, with
samples/s, model TFLOP/s and MFU) and the records it skipped (`bad_records.jsonl`)."""
from __future__ import annotations

import hashlib
import json
import time

import jax
from absl import logging
from etils import epath
from tqdm.auto import tqdm

from clipjax.train.events import EventWriter


class BadRecordLog:
  """Names skipped records: the first `shown` in the log, every distinct one once in
  WORKDIR/bad_records.jsonl (one file per host on multi-host runs) with the step it was first
  seen at; a record skipped again in a later epoch is counted, not written again. Memory: one
  8-byte digest per distinct bad record."""

  def __init__(self, workdir: epath.Path, shown: int = 10):
    name = ("bad_records.jsonl" if jax.process_count() == 1
            else f"bad_records.host{jax.process_index()}.jsonl")
    self.path, self.shown, self.seen, self._file = workdir / name, shown, 0, None
    self._written: set[bytes] = set()
    if self.path.exists():  # a resumed run (rewound to its checkpoint): those stay known
      for line in self.path.read_text().splitlines():
        row = json.loads(line)
        self._written.add(self._digest(row["reason"], row["detail"]))

  @staticmethod
  def _digest(reason: str, detail: str) -> bytes:
    return hashlib.blake2b(f"{reason}\0{detail}".encode(), digest_size=8).digest()

  def add(self, step: int, examples: list[tuple[str, str]]) -> None:
    for reason, detail in examples:
      digest = self._digest(reason, detail)
      if digest in self._written:
        continue
      self._written.add(digest)
      if self.seen < self.shown:
        logging.warning("skipped record (%s): %s%s", reason, detail,
                        f" (further ones: {self.path})" if self.seen + 1 == self.shown else "")
      self.seen += 1
      if self._file is None:
        self._file = self.path.open("a")
      self._file.write(json.dumps({"step": step, "reason": reason, "detail": detail}) + "\n")
    if examples:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


# Logged but kept off the progress bar, which shows the loss, the terms and values the
# method's loss returns, samples/s and MFU.
BAR_HIDDEN = ("grad_norm", "model_tflops")


class MetricsLog:
  """JSONL + TensorBoard event files (process 0), and the progress bar. Besides the step's
  metrics: samples/s, model TFLOP/s and MFU (model FLOPs over the interval's wall time, data
  included, against `peak_flops` per device x `devices`; clipjax/train/flops.py)."""

  def __init__(self, workdir: epath.Path, start: int, total: int, batch_size: int,
               peak: float, devices: int):
    self.main = jax.process_index() == 0
    self.batch_size, self.last_time, self.last_step = batch_size, time.perf_counter(), start
    self.peak, self.flops = peak * devices, 0.0
    self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not self.main)
    if self.main:
      self.tb = EventWriter(workdir / "tensorboard")
      self.jsonl = (workdir / "metrics.jsonl").open("a")

  def add_flops(self, flops: float) -> None:
    self.flops += flops

  def write(self, step: int, values: dict[str, float]) -> None:
    now = time.perf_counter()
    seconds = max(now - self.last_time, 1e-9)
    rate = (step - self.last_step) * self.batch_size / seconds
    achieved = self.flops / seconds
    self.last_time, self.last_step, self.flops = now, step, 0.0
    values = dict(values, samples_per_sec=rate, model_tflops=achieved / 1e12,
                  mfu=achieved / self.peak)
    self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()
                          if k not in BAR_HIDDEN and not k.startswith("bad_records/")})
    if self.main:
      self.tb.scalars(step, {f"train/{k}": v for k, v in values.items()})
      self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
      self.jsonl.flush()

  def close(self) -> None:
    self.bar.close()
    if self.main:
      self.tb.close()
      self.jsonl.close()
