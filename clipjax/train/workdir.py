"""The work dir of a training run: one run at a time, a config bound once training has
checkpointed, and logs that hold each step once across resumes.

- `WorkdirLock`: a POSIX record lock on WORKDIR/.lock (process 0; object-store work dirs such
  as gs:// have no locks and are not guarded). The kernel drops the lock when its process
  dies, so a killed run's lock file is simply taken over; the file records the holder's pid,
  host and start time for the message a second run gets.
- `check_workdir_config`: the resolved config is saved as WORKDIR/config.json; once the work
  dir holds a checkpoint, a rerun whose config differs in a field that changes training is
  refused with the difference (resuming it would mix two experiments). Before the first
  checkpoint nothing is bound: a run that crashed at start leaves the dir free for any config.
- `rewind_logs`: a resumed run drops what the interrupted one logged after the checkpoint it
  resumes from (metrics.jsonl, bad-record files, TensorBoard events), so no step repeats.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Any

import jax
from etils import epath

from clipjax.errors import ConfigError
from clipjax.files import write_atomically
from clipjax.methods import method_config, moved_field
from clipjax.train.events import truncate_events

# Fields a rerun may change: how long to train, how often to log and checkpoint, what to
# evaluate, and how the processes find each other (a new coordinator port on every restart).
RERUN_FIELDS = ("total_steps", "log_every", "eval", "checkpoint", "distributed")
LOCK_NAME = ".lock"


def _is_local(workdir: str | os.PathLike) -> bool:
  return "://" not in os.fspath(workdir)


def check_writable(workdir: str | os.PathLike) -> None:
  """Creates `workdir` and writes a probe file in it; a ConfigError naming it otherwise."""
  if not _is_local(workdir):
    return
  probe = os.path.join(workdir, f".write-probe-{os.getpid()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.unlink(probe)
  except OSError as e:
    raise ConfigError(f"work dir {workdir} is not writable ({e.strerror or e}); pass a "
                      f"writable --workdir") from None


class WorkdirLock:
  """Held for the life of a run (`with WorkdirLock(workdir):`); ConfigError if another live
  process holds it."""

  def __init__(self, workdir: str | os.PathLike):
    self.workdir, self._fd = os.fspath(workdir), None

  def __enter__(self) -> "WorkdirLock":
    check_writable(self.workdir)
    if not _is_local(self.workdir) or jax.process_index() != 0:
      return self
    path = os.path.join(self.workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 4096).decode(errors="replace")
      os.close(fd)
      try:
        info = json.loads(holder)
        who = (f"process {info['pid']} on {info['host']} (started {info['started']})")
      except (ValueError, KeyError, TypeError):
        who = "another process"
      raise ConfigError(f"work dir {self.workdir} is in use by {who}; wait for that run, stop "
                        f"it, or pass another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.datetime.now().isoformat(timespec="seconds")
                             }).encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.close(self._fd)  # releases the lock; the file stays, for the next run to take
      self._fd = None


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  directory = epath.Path(workdir) / "checkpoints"
  return directory.exists() and any(p.name.isdigit() for p in directory.iterdir())


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _current_layout(flat: dict[str, Any], method: str) -> dict[str, Any]:
  """A saved config's fields under their names in the current layout: a field of the
  previous layout (`loss.a`, ...) renamed into the method's block, or dropped when the method
  never read it (the work dir of a CLIP run trained before had a `loss.tau`); a field added
  since (e.g. `optim.name`) at its default value, which is what the run trained with."""
  out = {}
  for key, value in flat.items():
    moved = moved_field(key, method)
    if moved is None or moved[1] is not None:
      out[key if moved is None else moved[1]] = value
  defaults = _flatten(json.loads(method_config(method).to_json_best_effort()))
  # a source spec (a dict with a `kind`, e.g. data.train) is saved whole: the default's other
  # fields (a synthetic source's size, ...) are not fields it lacks
  specs = tuple(o[:-len("kind")] for o in out if o.endswith(".kind"))
  return {k: v for k, v in defaults.items() if not k.startswith(specs) and not any(
      k == o or k.startswith(o + ".") or o.startswith(k + ".") for o in out)} | out


def check_workdir_config(cfg, workdir: str) -> None:
  """Saves `cfg` as WORKDIR/config.json, or refuses (ConfigError) a rerun whose config
  differs from the saved one in a field outside RERUN_FIELDS when the work dir holds a
  checkpoint. A run's config holds the shared fields and its own method's block only, so
  a setting its method does not read never blocks a resume."""
  path = epath.Path(workdir) / "config.json"
  current = json.loads(cfg.to_json_best_effort())
  if path.exists() and has_checkpoint(workdir):
    saved = json.loads(path.read_text())
    old, new = _current_layout(_flatten(saved), cfg.method), _flatten(current)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                     and k.split(".")[0] not in RERUN_FIELDS)
    if changed:
      diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
      more = f" (+{len(changed) - 6} more)" if len(changed) > 6 else ""
      raise ConfigError(f"work dir {workdir} was trained with another config ({diff}{more}); "
                        f"rerun with the same values to resume, or start fresh with another "
                        f"--workdir (or delete {workdir})")
  if jax.process_index() == 0:
    write_atomically(path, json.dumps(current, indent=2, sort_keys=True))


def _truncate_jsonl(path: epath.Path, step: int) -> None:
  """Keeps the rows of a JSONL log with `step` <= step (and rows that cannot be read)."""
  if not path.exists():
    return
  lines = path.read_text().splitlines()
  def keep(line: str) -> bool:
    try:
      return int(json.loads(line)["step"]) <= step
    except (ValueError, KeyError, TypeError):
      return False  # a line cut by a kill: the resumed run writes its step again
  kept = [line for line in lines if keep(line)]
  if len(kept) != len(lines):
    write_atomically(path, "".join(line + "\n" for line in kept))


def rewind_logs(workdir: str | os.PathLike, step: int) -> None:
  """Drops every log entry after `step` (the checkpoint a run resumes from, 0 for a fresh
  start) from this work dir's metrics, bad-record files and TensorBoard events."""
  workdir = epath.Path(workdir)
  if jax.process_index() == 0:
    _truncate_jsonl(workdir / "metrics.jsonl", step)
    if (workdir / "tensorboard").exists():
      truncate_events(workdir / "tensorboard", step)
  for path in workdir.glob("bad_records*.jsonl"):
    if path.name in ("bad_records.jsonl", f"bad_records.host{jax.process_index()}.jsonl"):
      _truncate_jsonl(path, step)
