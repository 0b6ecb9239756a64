"""orbax checkpoints of the train state and the grain iterator, plus preemption handling.

A checkpoint holds params, optimizer state, step and RNG key (`state`) and every host's
data-iterator position (`data`, one JSON per process), so a restarted run continues with
exactly the batches an uninterrupted run would have seen. orbax writes each step into a
temporary directory and renames it when complete: a crash never leaves a half-written
checkpoint that a restart would pick up.

With LoRA the adapted weights are frozen and come from the base checkpoint the run loads
anyway, so a checkpoint leaves them out (`BaseWeights`): it holds the adapters, optimizer
state and position, plus the base's name and fingerprint (`base` item), and a resume onto a
base whose weights differ is refused rather than continued on the wrong weights.
"""
from __future__ import annotations

import dataclasses
import signal
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from clipjax.convert.io import CheckpointError


@dataclasses.dataclass(frozen=True)
class BaseWeights:
  """Frozen towers `state["params"][key]` (key in `keys`) a checkpoint names instead of
  holding."""
  keys: tuple[str, ...]  # e.g. ("clip",)
  name: str     # where the run loads them from (model.pretrained / model.checkpoint)
  digest: str   # evaluate.embed.params_fingerprint of those weights

  def record(self) -> dict:
    return {"keys": list(self.keys), "name": self.name, "digest": self.digest}


class Checkpointer:

  def __init__(self, directory: str, every: int, keep: int, base: BaseWeights | None = None):
    self.every, self.base, self.directory = every, base, directory
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, state_template: Any, iterator) -> Any:
    """Restores the latest checkpoint into `state_template`'s structure/shardings and moves
    `iterator` to the saved position. Returns the state."""
    step = self.manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._saved_part(state_template))
    items = dict(state=ocp.args.StandardRestore(abstract),
                 data=grain.checkpoint.CheckpointRestore(iterator))
    if self.base is not None:
      items["base"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if self.base is None:
      return restored.state
    saved = restored.base
    if saved != self.base.record():
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} holds adapters of base weights {saved['name']} "
          f"(fingerprint {saved['digest']}), but this run's base {self.base.name} has "
          f"fingerprint {self.base.digest}; restore that base or use a new work dir")
    return dict(restored.state, params={**restored.state["params"], **{
        k: state_template["params"][k] for k in self.base.keys}})

  def _saved_part(self, state: Any) -> Any:
    if self.base is None:
      return state
    return dict(state, params={k: v for k, v in state["params"].items()
                               if k not in self.base.keys})

  def due(self, step: int) -> bool:
    """Whether the `every N steps` schedule saves at `step`."""
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state: Any, iterator) -> None:
    items = dict(state=ocp.args.StandardSave(self._saved_part(state)),
                 data=grain.checkpoint.CheckpointSave(iterator))
    if self.base is not None:
      items["base"] = ocp.args.JsonSave(self.base.record())
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionFlag:
  """Set by SIGTERM (what Cloud TPU / Kubernetes / SLURM send before preemption) or by the
  first Ctrl-C (SIGINT); the loop then saves and exits. A second Ctrl-C aborts at once
  (KeyboardInterrupt). `seen()` is agreed on by every host (an all-gather of the flags), so all
  hosts save at the same step; `signal_name` says which signal came."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self._flag = False
    self.signal_name = "SIGTERM"
    self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}

  def _handler(self, signum, frame):
    del frame
    self._flag = True
    self.signal_name = signal.Signals(signum).name
    if signum == signal.SIGINT:  # the next Ctrl-C interrupts whatever runs
      signal.signal(signal.SIGINT, signal.default_int_handler)

  @property
  def exit_code(self) -> int:
    return 128 + int(getattr(signal, self.signal_name))

  def seen(self) -> bool:
    if jax.process_count() == 1:
      return self._flag
    flags = multihost_utils.process_allgather(np.asarray(self._flag))
    return bool(np.any(flags))

  def restore_handler(self) -> None:
    for s, previous in self._previous.items():
      signal.signal(s, previous)
