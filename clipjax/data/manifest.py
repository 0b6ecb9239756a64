"""Manifests: JSONL, CSV or TSV files of records next to an image folder, including
open_clip's CSV / TSV (`filepath` and `title` columns, tab-separated).

Nothing in one line can stop a run: a line that is not valid UTF-8, not JSON, not a JSON
object, or holds a field of the wrong type becomes a `BadRecord` named `file:line`; only a
problem with the file as a whole (missing, unknown format, no caption column) is an error.
"""
from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from etils import epath

from clipjax.data.paths import expand_user
from clipjax.data.records import BadRecord, check_fields
from clipjax.errors import ConfigError

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
# Columns holding JSON text in a CSV manifest.
_JSON_COLUMNS = ("dialogue", "captions", "negatives")
# Fields that make a row usable without a `caption` (text-only and multi-caption manifests).
_TEXT_ALTERNATIVES = ("captions", "long_caption", "query", "positive", "dialogue")


def _json_rows(path: epath.Path, text: str):
  for number, line in enumerate(text.split("\n"), 1):
    if not line.strip():
      continue
    if _UNDECODABLE.search(line):
      yield number, BadRecord("bad_encoding", f"{path}:{number}: not valid UTF-8")
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      yield number, BadRecord("bad_json", f"{path}:{number}: {e}")
      continue
    if not isinstance(row, dict):
      yield number, BadRecord("bad_json", f"{path}:{number}: a JSON {type(row).__name__}, "
                                          f"expected an object")
    else:
      yield number, row


def _csv_rows(path: epath.Path, text: str, sep: str):
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
  header = next(reader, None)
  if not header:
    raise ConfigError(f"{path} is empty (a CSV manifest needs a header row)")
  header = [h.strip() for h in header]
  rows = []
  for values in reader:
    number = reader.line_num
    if not any(v.strip() for v in values):
      continue
    if _UNDECODABLE.search("".join(values)):
      rows.append((number, BadRecord("bad_encoding", f"{path}:{number}: not valid UTF-8")))
    elif len(values) != len(header):
      rows.append((number, BadRecord("bad_field", f"{path}:{number}: {len(values)} fields, the "
                                                  f"header has {len(header)}")))
    else:
      rows.append((number, dict(zip(header, values))))
  return header, rows


def _parse_json_columns(row: dict, where: str) -> dict | BadRecord:
  for column in _JSON_COLUMNS:
    if row.get(column):
      try:
        row[column] = json.loads(row[column])
      except json.JSONDecodeError as e:
        return BadRecord("bad_json", f"{where}: column {column}: {e}")
  return row


class ManifestSource:
  """A JSONL, CSV or TSV manifest next to an image folder.

  Each line / row: the image (`img_key`, default `image`; a path relative to `image_root`,
  default the manifest's folder, or absolute), the caption (`caption_key`, default `caption`)
  or a `captions` list, and optionally `long_caption`, `dialogue` (list of [q, a]; in CSV a JSON
  string), `label`, `image_id` (integers, or strings hashed to one). A line with a `captions`
  list gives one record per caption, sharing the line's `image_id` (as the COCO source does).
  `sep`: the CSV separator (a character or tab / comma / semicolon / pipe); by default tab for
  `.tsv`, otherwise tab if the header has one, else comma. An `image_id` that already names
  another image is a `duplicate_id` bad record, reported once.
  """

  def __init__(self, manifest: str, image_root: str | None = None, img_key: str | None = None,
               caption_key: str | None = None, sep: str | None = None):
    self.manifest = epath.Path(expand_user(manifest))
    if not self.manifest.exists():
      raise ConfigError(f"manifest {self.manifest} does not exist")
    self.image_root = epath.Path(expand_user(image_root)) if image_root else self.manifest.parent
    self.img_key, self.caption_key = img_key or "image", caption_key or "caption"
    # Bytes that are not UTF-8 survive decoding as lone surrogates: one bad line, not a bad file.
    text = self.manifest.read_bytes().decode("utf-8", "surrogateescape")
    self._csv = bool(sep) or self.manifest.suffix in (".csv", ".tsv")
    if self.manifest.suffix in (".jsonl", ".json") and not sep:
      rows = list(_json_rows(self.manifest, text))
    elif self._csv:
      header, rows = _csv_rows(self.manifest, text, self._separator(sep, text))
      self._check_columns(header)
    else:
      raise ConfigError(f"manifest {self.manifest}: expected a .jsonl, .csv or .tsv file")
    self._rows = [(n, self._record(n, row)) for n, row in rows]
    self._mark_duplicate_ids()
    # One item per record: (row index, caption index or None for the row's own `caption`).
    self._items: list[tuple[int, int | None]] = []
    for i, (_, row) in enumerate(self._rows):
      captions = row.get("captions") if isinstance(row, dict) else None
      if isinstance(captions, list) and captions and not row.get("caption"):
        self._items.extend((i, c) for c in range(len(captions)))
      else:
        self._items.append((i, None))

  def _separator(self, sep: str | None, text: str) -> str:
    if sep:
      sep = _SEPARATORS.get(sep, sep)
      if len(sep) != 1:
        raise ConfigError(f"manifest {self.manifest}: sep={sep!r} is not one character (or one "
                          f"of {sorted(_SEPARATORS)})")
      return sep
    first = text.split("\n", 1)[0]
    return "\t" if self.manifest.suffix == ".tsv" or "\t" in first else ","

  def _check_columns(self, header: list[str]) -> None:
    if self.caption_key not in header and not any(c in header for c in _TEXT_ALTERNATIVES):
      raise ConfigError(f"manifest {self.manifest} has columns {header}: no caption column "
                        f"{self.caption_key!r} (set caption_key=..., e.g. open_clip's CSV "
                        f"`csv:file=...` reads filepath and title)")

  def _record(self, number: int, row: Any) -> dict | BadRecord:
    if isinstance(row, BadRecord):
      return row
    where = f"{self.manifest}:{number}"
    if isinstance(row.get(self.img_key), str) and row[self.img_key].strip() == "":
      row.pop(self.img_key)
    if self.img_key != "image" and self.img_key in row:
      row["image"] = row.pop(self.img_key)
    if self.caption_key != "caption" and self.caption_key in row:
      row["caption"] = row.pop(self.caption_key)
    if self._csv:
      row = _parse_json_columns(row, where)
      if isinstance(row, BadRecord):
        return row
    row = check_fields(row, where)
    if isinstance(row, dict) and isinstance(row.get("image"), str):
      row["image"] = str(self.image_root / row["image"])
    return row

  def _mark_duplicate_ids(self) -> None:
    first: dict[int, tuple[str, int]] = {}
    for i, (number, row) in enumerate(self._rows):
      if not isinstance(row, dict) or "image_id" not in row:
        continue
      seen = first.setdefault(row["image_id"], (row.get("image"), number))
      if seen[0] != row.get("image"):
        self._rows[i] = (number, BadRecord(
            "duplicate_id", f"{self.manifest}:{number}: image_id {row['image_id']} already "
                            f"names {seen[0]} (line {seen[1]})"))

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int):
    row_index, caption_index = self._items[index]
    number, row = self._rows[row_index]
    if isinstance(row, BadRecord):
      return row
    record = dict(row, where=f"{self.manifest}:{number}")
    if caption_index is not None:
      record["caption"] = row["captions"][caption_index]
    record.setdefault("image_id", row_index)
    return record


def open_clip_csv(file: str, image_root: str | None = None, img_key: str = "filepath",
                  caption_key: str = "title", sep: str | None = None) -> ManifestSource:
  """open_clip's `--dataset-type csv` data (`--csv-img-key filepath --csv-caption-key title
  --csv-separator '\\t'`): a CSV / TSV with an image path and a caption column."""
  return ManifestSource(file, image_root, img_key, caption_key, sep)
