"""array_record shards: fast random access to any source, records stored as msgpack (data,
never pickle). Images are stored encoded (the source's bytes, the file's bytes, or PNG for
array images), so shards are self-contained."""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import msgpack
import numpy as np
from etils import epath
from PIL import Image

from clipjax.data.records import BadRecord


def encode_record(record: dict[str, Any]) -> bytes:
  """A record -> msgpack bytes with the image embedded as encoded bytes."""
  out = {k: v for k, v in record.items() if v is not None}
  image = out.get("image")
  if isinstance(image, np.ndarray):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    out["image"] = buf.getvalue()
  elif isinstance(image, str):
    out["image"] = epath.Path(image).read_bytes()
  out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}
  return msgpack.packb(out, use_bin_type=True)


def decode_record(data: bytes) -> dict[str, Any]:
  return msgpack.unpackb(data, raw=False)


def write_array_record(source, path_pattern: str, num_shards: int = 1,
                       progress: Callable[[int], None] | None = None) -> tuple[list[str], dict]:
  """Writes every good record of `source` round-robin into `num_shards` files
  (`path_pattern` with `{shard}` / `{num_shards}` fields). Returns (paths, skipped by reason):
  bad records and unreadable image files are counted, not written."""
  from array_record.python.array_record_module import ArrayRecordWriter
  paths = [path_pattern.format(shard=s, num_shards=num_shards) for s in range(num_shards)]
  for p in paths:
    epath.Path(p).parent.mkdir(parents=True, exist_ok=True)
  writers = [ArrayRecordWriter(p, "group_size:1") for p in paths]
  skipped: dict[str, int] = {}
  written = 0
  try:
    for index in range(len(source)):
      record = source[index]
      if isinstance(record, BadRecord):
        skipped[record.reason] = skipped.get(record.reason, 0) + 1
        continue
      try:
        data = encode_record(record)
      except FileNotFoundError:
        skipped["missing_file"] = skipped.get("missing_file", 0) + 1
        continue
      writers[written % num_shards].write(data)
      written += 1
      if progress:
        progress(index)
  finally:
    for w in writers:
      w.close()
  return paths, skipped


class ArrayRecordSource:
  """Reads shards written by `write_array_record` (grain's ArrayRecordDataSource underneath)."""

  def __init__(self, paths: Sequence[str]):
    import grain
    self.paths = list(paths)
    self._source = grain.sources.ArrayRecordDataSource(self.paths)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode_record(self._source[index])
