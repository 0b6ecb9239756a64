"""WORKDIR/bad_records.jsonl: every distinct record a training run skipped, named once."""
from __future__ import annotations

import hashlib
import json

import jax
from absl import logging
from etils import epath


class BadRecordLog:
  """Names skipped records: the first `shown` in the log, every distinct one once in
  WORKDIR/bad_records.jsonl (one file per host on multi-host runs) with the step it was first
  seen at; a record skipped again in a later epoch is counted, not written again. Memory: one
  8-byte digest per distinct bad record. The file is read at the first `add`, so a resumed
  run rewinds it to its checkpoint first (`clipjax.train.workdir.rewind_logs`)."""

  def __init__(self, workdir: epath.Path, shown: int = 10):
    name = ("bad_records.jsonl" if jax.process_count() == 1
            else f"bad_records.host{jax.process_index()}.jsonl")
    self.path, self.shown, self.seen, self._file = workdir / name, shown, 0, None
    self._written: set[bytes] | None = None

  def _open(self) -> None:
    self._written = set()
    if self.path.exists():  # a resumed run (rewound to its checkpoint): those stay known
      for line in self.path.read_text().splitlines():
        row = json.loads(line)
        self._written.add(self._digest(row["reason"], row["detail"]))
    self._file = self.path.open("a")

  @staticmethod
  def _digest(reason: str, detail: str) -> bytes:
    return hashlib.blake2b(f"{reason}\0{detail}".encode(), digest_size=8).digest()

  def add(self, step: int, examples: list[tuple[str, str]]) -> None:
    if not examples:
      return
    if self._written is None:
      self._open()
    for reason, detail in examples:
      digest = self._digest(reason, detail)
      if digest in self._written:
        continue
      self._written.add(digest)
      if self.seen < self.shown:
        logging.warning("skipped record (%s): %s%s", reason, detail,
                        f" (further ones: {self.path})" if self.seen + 1 == self.shown else "")
      self.seen += 1
      self._file.write(json.dumps({"step": step, "reason": reason, "detail": detail}) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
