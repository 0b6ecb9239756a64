"""Sharded image–text data as others write it: WebDataset / img2dataset `.tar` shards and
parquet files (Hugging Face `datasets`, img2dataset's parquet output).

Both are indexed once and read by position, so they shuffle globally and split across hosts
like every other source (`clipjax.data.pipeline.build_dataset`). Tar members are read by offset
into memory, never extracted by their own names. A sample that cannot be read is a `BadRecord`
named `shard.tar:key` or `file.parquet:row`.
"""
from __future__ import annotations

import bisect
import collections
import json
import tarfile
from collections import defaultdict
from typing import Any, Sequence

from etils import epath

from clipjax.data.folder import IMAGE_EXTENSIONS
from clipjax.data.records import BadRecord, check_fields
from clipjax.errors import ConfigError


def _split_member(name: str) -> tuple[str, str]:
  """WebDataset's naming: the key is the member's path up to the first dot of its base name,
  the rest its extension (`a/b/000001.seg.png` -> `a/b/000001`, `.seg.png`)."""
  directory, _, base = name.rpartition("/")
  stem, _, ext = base.partition(".")
  return (f"{directory}/{stem}" if directory else stem), "." + ext.lower()


class WebDatasetSource:
  """`.tar` shards of samples `key.jpg` (or another image extension) + `key.txt` (caption) +
  optional `key.json` (`caption`, `long_caption`, `dialogue`, `label`). A key that occurs again
  (in the same or a later shard) is a `duplicate_id` bad record; the first one is used."""

  def __init__(self, shards: Sequence[str]):
    self.shards = [epath.Path(s) for s in shards]
    # (shard id, key, {extension: (offset, size)}) or a BadRecord for a repeated key.
    self._index: list[tuple[int, str, dict[str, tuple[int, int]]] | BadRecord] = []
    seen: dict[str, str] = {}
    for shard_id, shard in enumerate(self.shards):
      groups: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
      repeated: set[str] = set()
      with shard.open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
          if not member.isfile():
            continue
          key, ext = _split_member(member.name)
          if ext in groups[key]:
            repeated.add(key)
          groups[key].setdefault(ext, (member.offset_data, member.size))
      for key in sorted(groups):
        if key in seen or key in repeated:
          first = seen.get(key, shard.name)
          self._index.append(BadRecord("duplicate_id", f"{shard.name}:{key}: the key occurs "
                                                       f"again (first in {first}); skipped"))
        if key not in seen:
          seen[key] = shard.name
          self._index.append((shard_id, key, groups[key]))

  def __len__(self) -> int:
    return len(self._index)

  def _read(self, shard_id: int, where: tuple[int, int]) -> bytes:
    offset, size = where
    with self.shards[shard_id].open("rb") as f:
      f.seek(offset)
      return f.read(size)

  def __getitem__(self, index: int):
    entry = self._index[index]
    if isinstance(entry, BadRecord):
      return entry
    shard_id, key, parts = entry
    where = f"{self.shards[shard_id].name}:{key}"
    image_ext = next((e for e in parts if e in IMAGE_EXTENSIONS), None)
    if image_ext is None:
      return BadRecord("missing_field", f"{where}: no image member ({sorted(parts)})")
    record: dict[str, Any] = {"image_id": index, "where": where,
                              "image": self._read(shard_id, parts[image_ext])}
    if ".txt" in parts:
      try:
        record["caption"] = self._read(shard_id, parts[".txt"]).decode("utf-8")
      except UnicodeDecodeError:
        return BadRecord("bad_encoding", f"{where}.txt: not valid UTF-8")
    if ".json" in parts:
      try:
        meta = json.loads(self._read(shard_id, parts[".json"]))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return BadRecord("bad_json", f"{where}.json: {e}")
      if not isinstance(meta, dict):
        return BadRecord("bad_json", f"{where}.json: a JSON {type(meta).__name__}, expected an "
                                     f"object")
      for field in ("caption", "long_caption", "dialogue", "label"):
        if field in meta and field not in record:
          record[field] = meta[field]
    if "caption" not in record:
      return BadRecord("missing_field", f"{where}: no caption (.txt member or json caption)")
    return check_fields(record, where)


class ParquetSource:
  """Parquet files of image–text rows: `image_key` holds encoded image bytes, a
  `{bytes, path}` struct (Hugging Face's Image feature) or a path; `caption_key` the text;
  optional `label_key` (a Hugging Face ClassLabel's names become `class_names`) and `id_key`.
  Rows are read a row group at a time (the last few row groups of each process are kept)."""

  CACHED_GROUPS = 4

  def __init__(self, files: Sequence[str], image_key: str = "image",
               caption_key: str = "caption", label_key: str | None = None,
               id_key: str | None = None):
    import pyarrow.parquet as pq
    self.files = [epath.Path(f) for f in files]
    self.columns = [c for c in (image_key, caption_key, label_key, id_key) if c]
    self.image_key, self.caption_key, self.label_key, self.id_key = (image_key, caption_key,
                                                                     label_key, id_key)
    self._groups: list[tuple[int, int, int]] = []  # (file, row group, first row in file)
    self._starts: list[int] = []                   # global index of each group's first row
    total, self.class_names = 0, None
    for file_id, path in enumerate(self.files):
      with path.open("rb") as f:
        meta = pq.ParquetFile(f).metadata
        schema = meta.schema.to_arrow_schema()
      missing = [c for c in self.columns if c not in schema.names]
      if missing:
        raise ConfigError(f"parquet file {path} has columns {schema.names}: no {missing} "
                          f"(set image_key / caption_key / label_key / id_key)")
      if label_key and self.class_names is None:
        self.class_names = _class_names(schema, label_key)
      row = 0
      for group in range(meta.num_row_groups):
        self._groups.append((file_id, group, row))
        self._starts.append(total)
        rows = meta.row_group(group).num_rows
        row, total = row + rows, total + rows
    self._len = total
    self._cache: collections.OrderedDict = collections.OrderedDict()

  def __getstate__(self):  # row groups are read again in each worker
    return {k: v for k, v in self.__dict__.items() if k != "_cache"}

  def __setstate__(self, state):
    self.__dict__.update(state, _cache=collections.OrderedDict())

  def __len__(self) -> int:
    return self._len

  def _group(self, g: int) -> dict[str, list]:
    if g not in self._cache:
      import pyarrow.parquet as pq
      file_id, group, _ = self._groups[g]
      with self.files[file_id].open("rb") as f:
        self._cache[g] = pq.ParquetFile(f).read_row_group(group, columns=self.columns).to_pydict()
      if len(self._cache) > self.CACHED_GROUPS:
        self._cache.popitem(last=False)
    self._cache.move_to_end(g)
    return self._cache[g]

  def __getitem__(self, index: int):
    g = bisect.bisect_right(self._starts, index) - 1
    file_id, _, first_row = self._groups[g]
    row = index - self._starts[g]
    where = f"{self.files[file_id].name}:{first_row + row}"
    columns = self._group(g)
    image = columns[self.image_key][row]
    if isinstance(image, dict):  # the datasets Image feature: {"bytes": ..., "path": ...}
      image = image.get("bytes") or image.get("path")
    if not image:
      return BadRecord("missing_field", f"{where}: no image in column {self.image_key}")
    if isinstance(image, str) and not epath.Path(image).is_absolute():
      image = str(self.files[file_id].parent / image)
    record = {"image": image, "caption": columns[self.caption_key][row], "where": where,
              "image_id": columns[self.id_key][row] if self.id_key else index}
    if self.label_key:
      record["label"] = columns[self.label_key][row]
    if record["caption"] is None:
      return BadRecord("missing_field", f"{where}: no caption in column {self.caption_key}")
    return check_fields(record, where)


def _class_names(schema, label_key: str) -> list[str] | None:
  """A Hugging Face ClassLabel's names, from the `huggingface` schema metadata."""
  raw = (schema.metadata or {}).get(b"huggingface")
  try:
    feature = json.loads(raw)["info"]["features"][label_key]
  except (TypeError, KeyError, ValueError):
    return None
  return list(feature["names"]) if isinstance(feature, dict) and "names" in feature else None
