"""The fixed settings of a global-batch loss, as one hashable value, and what each loss reads.

A training step builds one `LossOptions` from the run's config (the method's `form` and
`bidirectional`, `loss.block_size`, the resolved `loss.exchange`) and hands it to every loss it
calls. Each loss declares the settings it reads (`@reads`); validation refuses a run whose
options set one that a loss of its method does not read (`unread`), so no setting is ever
silently ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

FORMS = ("softmax", "sigmoid")
EXCHANGES = ("all_gather", "ring")


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """form: each query-side term's "softmax" (CE_rows) or "sigmoid" (SigLIP's pairwise sigmoid
  with the model's bias, docs/methods.md §7b); bidirectional: add each query-side CE term's
  transposed direction; block_size: keys per tile of the tiled path (None: the dense logits);
  exchange: how a device sees the other devices' rows, "all_gather" or "ring"
  (`clipjax.losses.ring`)."""
  form: str = "softmax"
  bidirectional: bool = False
  block_size: int | None = None
  exchange: str = "all_gather"

  def __post_init__(self):
    if self.form not in FORMS:
      raise ValueError(f"form must be one of {list(FORMS)}, got {self.form!r}")
    if self.exchange not in EXCHANGES:
      raise ValueError(f"exchange must be one of {list(EXCHANGES)}, got {self.exchange!r}")
    if self.block_size is not None and self.block_size < 1:
      raise ValueError(f"block_size must be None (dense) or >= 1, got {self.block_size}")
    if self.form == "sigmoid" and self.bidirectional:
      raise ValueError("bidirectional has no meaning in the sigmoid form: it scores every pair "
                       "once, whichever side is the query")

  def changed(self) -> tuple[str, ...]:
    """The settings that differ from the defaults."""
    default = LossOptions()
    return tuple(f.name for f in dataclasses.fields(self)
                 if getattr(self, f.name) != getattr(default, f.name))


def reads(*settings: str) -> Callable:
  """Decorator: the `LossOptions` fields a loss honours (the others must stay at their
  defaults, see `unread`)."""
  unknown = set(settings) - {f.name for f in dataclasses.fields(LossOptions)}
  if unknown:
    raise ValueError(f"not LossOptions fields: {sorted(unknown)}")

  def mark(fn: Callable) -> Callable:
    fn.reads = frozenset(settings)
    return fn
  return mark


def unread(loss: Callable, options: LossOptions) -> tuple[str, ...]:
  """The settings of `options` that `loss` would ignore (a loss without `@reads` reads none)."""
  return tuple(s for s in options.changed() if s not in getattr(loss, "reads", ()))
