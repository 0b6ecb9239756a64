"""What a training run logs of its steps: the progress bar, `metrics.jsonl` and TensorBoard
events, with samples/s, model TFLOP/s and MFU (the records it skipped are logged by
`clipjax.data.bad_record_log`)."""
from __future__ import annotations

import json
import time

import jax
from etils import epath
from tqdm.auto import tqdm

from clipjax.train.events import EventWriter


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
    self.peak, self.flops, self.rows = peak * devices, 0.0, 0
    self.bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not self.main)
    if self.main:
      self.tb = EventWriter(workdir / "tensorboard")
      self.jsonl = (workdir / "metrics.jsonl").open("a")

  def add_step(self, flops: float, rows: int | None = None) -> None:
    """One step's model FLOPs and image–text rows (None: batch_size; NaFlex batches vary)."""
    self.flops += flops
    self.rows += self.batch_size if rows is None else rows

  def write(self, step: int, values: dict[str, float]) -> None:
    now = time.perf_counter()
    seconds = max(now - self.last_time, 1e-9)
    rate = self.rows / seconds
    achieved = self.flops / seconds
    self.last_time, self.last_step, self.flops, self.rows = now, step, 0.0, 0
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
