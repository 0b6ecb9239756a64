"""A frozen tower's embeddings at data-set scale: sharded array_record tables keyed by image_id.

A table directory holds the sorted unique image ids split into parts of `part_size`
consecutive ids; hosts embed disjoint parts (part p on host p mod hosts) and write

  part-00003.array_record   float32 [dim] rows, one record per embedded id, in id order
  part-00003.ids.npy        int64 the ids embedded in part 3 (written last: the part is done)

and once every part is done, one host writes `ids.npy` (all parts' ids, still sorted: parts
are consecutive ranges) and `offsets.npy` (each part's first global row). Readers memory-map
`ids.npy` and read rows from the part files record by record, so a reader's memory stays
bounded by the OS page cache whatever the table's size (LAION-400M x 512 floats is ~800 GB).
Every file is written under a temporary name and renamed, so an interrupted build leaves
whole parts only, and a rerun embeds just the missing ones.
"""
from __future__ import annotations

import collections
import io
import json
from typing import Sequence

import numpy as np
from etils import epath

from clipjax.files import atomic_target, write_atomically

MANIFEST = "manifest.json"
OPEN_READERS = 64  # part files a reader keeps open (LRU): bounded handles for any table size


def _part(directory: epath.Path, part: int, suffix: str) -> epath.Path:
  return directory / f"part-{part:05d}.{suffix}"


def plan_parts(count: int, part_size: int) -> list[tuple[int, int]]:
  """[start, end) ranges of `count` sorted ids in parts of `part_size`."""
  return [(s, min(s + part_size, count)) for s in range(0, count, part_size)]


def part_done(directory: epath.Path, part: int) -> bool:
  return _part(directory, part, "ids.npy").exists()


def _save_npy(path: epath.Path, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array)
  write_atomically(path, buffer.getvalue())


def write_part(directory: epath.Path, part: int, ids: np.ndarray, rows: np.ndarray) -> None:
  """Writes part `part`: rows [K, dim] float32 for sorted ids [K]."""
  from array_record.python.array_record_module import ArrayRecordWriter
  order = np.argsort(ids, kind="stable")
  ids, rows = np.asarray(ids, np.int64)[order], np.asarray(rows, np.float32)[order]
  with atomic_target(_part(directory, part, "array_record")) as target:
    writer = ArrayRecordWriter(target, "group_size:1")
    try:
      for row in rows:
        writer.write(row.tobytes())
    finally:
      writer.close()
  _save_npy(_part(directory, part, "ids.npy"), ids)


def start_table(directory: epath.Path, dim: int, parts: int, part_size: int) -> None:
  """Creates the directory and its manifest (the same text from every host)."""
  directory.mkdir(parents=True, exist_ok=True)
  text = json.dumps({"dim": dim, "parts": parts, "part_size": part_size}, sort_keys=True)
  path = directory / MANIFEST
  if not path.exists():
    write_atomically(path, text.encode())
  elif json.loads(path.read_text()) != json.loads(text):
    raise ValueError(f"{path} describes another table ({path.read_text()}), not {text}")


def finish_table(directory: epath.Path) -> None:
  """Joins the parts' ids into `ids.npy` and `offsets.npy` (every part must be done)."""
  parts = json.loads((directory / MANIFEST).read_text())["parts"]
  missing = [p for p in range(parts) if not part_done(directory, p)]
  if missing:
    raise FileNotFoundError(f"{directory}: parts {missing[:5]} are not written yet")
  ids = [np.load(_part(directory, p, "ids.npy").open("rb")) for p in range(parts)]
  offsets = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)
  _save_npy(directory / "offsets.npy", offsets)
  _save_npy(directory / "ids.npy", np.concatenate(ids) if ids else np.zeros(0, np.int64))


def table_done(directory: epath.Path) -> bool:
  return (directory / "ids.npy").exists()


class EmbeddingTable:
  """Reads a finished table: `image_id in table`, `lookup(ids) -> [B, dim]`. Picklable (grain
  worker processes open their own readers)."""

  def __init__(self, directory: str | epath.Path):
    self.directory = epath.Path(directory)
    self.dim = json.loads((self.directory / MANIFEST).read_text())["dim"]
    self.offsets = np.load((self.directory / "offsets.npy").open("rb"))
    self._ids = None
    self._readers = collections.OrderedDict()

  def __getstate__(self):
    return {"directory": self.directory, "dim": self.dim, "offsets": self.offsets}

  def __setstate__(self, state):
    self.__dict__.update(state, _ids=None, _readers=collections.OrderedDict())

  def _reader(self, part: int):
    from array_record.python.array_record_module import ArrayRecordReader
    if part in self._readers:
      self._readers.move_to_end(part)
    else:
      if len(self._readers) >= OPEN_READERS:
        self._readers.popitem(last=False)[1].close()
      self._readers[part] = ArrayRecordReader(str(_part(self.directory, part, "array_record")))
    return self._readers[part]

  @property
  def ids(self) -> np.ndarray:
    """int64 [M] sorted ids, memory-mapped."""
    if self._ids is None:
      self._ids = np.load(str(self.directory / "ids.npy"), mmap_mode="r")
    return self._ids

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def _rows(self, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = self.ids
    rows = np.minimum(np.searchsorted(ids, image_ids), max(len(ids) - 1, 0))
    found = (np.asarray(ids[rows]) == image_ids) if len(ids) else np.zeros(len(rows), bool)
    return rows, found

  def __contains__(self, image_id: int) -> bool:
    return bool(self._rows(np.asarray([image_id], np.int64))[1][0])

  def get(self, image_id: int) -> np.ndarray | None:
    """[dim] row of one id, or None when it is not cached (one search: the data workers'
    per-record call)."""
    rows, found = self._rows(np.asarray([image_id], np.int64))
    return self._read(rows)[0] if found[0] else None

  def lookup(self, image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """[B] ids -> [B, dim] float32 rows; raises KeyError naming ids that are not cached."""
    image_ids = np.asarray(image_ids, np.int64)
    rows, found = self._rows(image_ids)
    if not found.all():
      raise KeyError(f"image_ids {image_ids[~found][:5].tolist()} are not in the frozen-tower "
                     f"cache {self.directory}")
    return self._read(rows)

  def _read(self, rows: np.ndarray) -> np.ndarray:
    """Global rows -> [len(rows), dim] float32, read part by part."""
    parts = np.searchsorted(self.offsets, rows, side="right") - 1
    out = np.empty((len(rows), self.dim), np.float32)
    for part in np.unique(parts):
      where = np.flatnonzero(parts == part)
      records = self._reader(int(part)).read([int(r) for r in rows[where] - self.offsets[part]])
      out[where] = np.frombuffer(b"".join(records), np.float32).reshape(len(where), self.dim)
    return out


class StackedTables:
  """Several tables of the same ids read as one: `get(id)` -> [len(tables), D] rows (None when
  any table lacks the id). A NaFlex image tower's cache: one table per sequence length."""

  def __init__(self, tables: list[EmbeddingTable]):
    self.tables = list(tables)

  def get(self, image_id: int) -> np.ndarray | None:
    rows = [t.get(image_id) for t in self.tables]
    return None if any(r is None for r in rows) else np.stack(rows)
