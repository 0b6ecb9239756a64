"""orbax checkpoints of the train state and the grain iterator, plus preemption handling.

A checkpoint holds params, optimizer state, step and RNG key (`state`) and every host's
data-iterator position (`data`, one JSON per process), so a restarted run continues with
exactly the batches an uninterrupted run would have seen. orbax writes each step into a
temporary directory and renames it when complete: a crash never leaves a half-written
checkpoint that a restart would pick up.
"""
from __future__ import annotations

import signal
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class Checkpointer:

  def __init__(self, directory: str, every: int, keep: int):
    self.every = every
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, state_template: Any, iterator) -> Any:
    """Restores the latest checkpoint into `state_template`'s structure/shardings and moves
    `iterator` to the saved position. Returns the state."""
    step = self.manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(iterator)))
    return restored.state

  def due(self, step: int) -> bool:
    """Whether the `every N steps` schedule saves at `step`."""
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state: Any, iterator) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)),
        force=True)

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
