"""How a training step's batch divides: the global batch over hosts, devices and GradCache
sub-batches, a second text stream's batch, and a NaFlex image tower's batches by sequence
length. Built once per run (`batch_plan`) and read by validation, the training loop and the
data streams, so the three never count devices differently.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from clipjax.data.batching import LengthPlan, plan_lengths
from clipjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """global_batch: image–text rows per step over every device (`batch_size`); devices / hosts:
  the mesh's; accum_steps: GradCache sub-batches per device (`optim.accum_steps`);
  text_batch: the text-pair stream's global rows (`data.text_batch_size`, None: no such
  stream); lengths: a NaFlex tower's rows per host at each sequence length (None: fixed-size
  images)."""
  global_batch: int
  devices: int
  hosts: int
  accum_steps: int = 1
  text_batch: int | None = None
  lengths: LengthPlan | None = None

  @property
  def per_host(self) -> int:
    return self.global_batch // self.hosts

  @property
  def per_device(self) -> int:
    return self.global_batch // self.devices

  @property
  def text_per_host(self) -> int | None:
    return None if self.text_batch is None else self.text_batch // self.hosts

  def describe(self) -> str:
    """The global batch as a run's header prints it."""
    if self.lengths is None:
      return str(self.global_batch)
    return "NaFlex " + ", ".join(f"{rows * self.hosts} x {n} patches"
                                 for n, rows in zip(self.lengths.lengths, self.lengths.rows))


def batch_plan(cfg: Any, devices: int, hosts: int,
               naflex_patches: int | None = None) -> BatchPlan:
  """The plan of a run's options (`clipjax.options.RunOptions`) on `devices` devices of `hosts` hosts; `naflex_patches`: the
  NaFlex image tower's default sequence length (None: the tower takes fixed-size images).
  Raises ConfigError naming the field that does not divide or fit."""
  text_batch = cfg.data.text_batch_size
  for name, value in (("batch_size", cfg.batch_size), ("data.text_batch_size", text_batch)):
    if value is not None and (value <= 0 or value % hosts or value % devices):
      raise ConfigError(f"{name}={value} must be a positive multiple of the {devices} devices "
                        f"(and of the {hosts} hosts)")
  plan = BatchPlan(cfg.batch_size, devices, hosts, cfg.optim.accum_steps, text_batch)
  if plan.accum_steps < 1 or plan.per_device % plan.accum_steps:
    raise ConfigError(f"optim.accum_steps={plan.accum_steps} must divide the per-device batch "
                      f"{plan.per_device}")
  return dataclasses.replace(plan, lengths=_length_plan(cfg, plan, naflex_patches))


def _length_plan(cfg, plan: BatchPlan, naflex_patches: int | None) -> LengthPlan | None:
  """data.naflex: positive lengths and a token budget that holds a batch at each (with its
  GradCache sub-batches) on every device."""
  naflex = cfg.data.naflex
  if naflex_patches is None:
    if naflex.lengths or naflex.token_budget:
      raise ConfigError("data.naflex is for SigLIP 2 NaFlex image towers; this architecture's "
                        "image tower takes fixed-size images")
    return None
  lengths = naflex.lengths or (naflex_patches,)
  if not all(isinstance(n, int) and n > 0 for n in lengths):
    raise ConfigError(f"data.naflex.lengths={list(lengths)} must be positive patch counts, "
                      f"e.g. 128,256,576")
  budget = naflex.token_budget
  if budget < 0:
    raise ConfigError(f"data.naflex.token_budget={budget} must be >= 0 (0: batch_size / "
                      f"devices at the longest length)")
  try:
    return plan_lengths(lengths, budget or plan.per_device * max(lengths),
                        plan.devices // plan.hosts, seed=cfg.seed, multiple=plan.accum_steps)
  except ValueError as e:
    raise ConfigError(str(e)) from None
