"""The record schema shared by every source (documented in docs/data.md).

Image–text records: `image` (encoded bytes, a path, or a uint8 [H, W, 3] array), `caption`,
optional `long_caption`, `dialogue` (list of (question, answer) pairs), `label` (int, with a
class-name table kept by the source), `image_id`, and `where` (the record's place in its files,
`file:line`, `shard.tar:key` or `file:row`, so a skipped record can be found again). Text
records: `query`, `positive`, `negatives` (list). A source that cannot produce a record returns
`BadRecord(reason, detail)`, which the pipeline skips, counts and names.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

# Why records were skipped. `remainder` counts good records dropped at the end of a finite
# stream that did not fill a batch (pad_remainder=False); `error` is any other failure while
# reading or preparing one record (its exception type and message are the detail).
BAD_REASONS = ("missing_file", "corrupt_image", "too_large", "empty_caption", "bad_json",
               "bad_encoding", "bad_field", "missing_field", "missing_dialogue", "duplicate_id",
               "error", "remainder")


@dataclasses.dataclass(frozen=True)
class BadRecord:
  reason: str
  detail: str = ""

  def __post_init__(self):
    if self.reason not in BAD_REASONS:
      raise ValueError(f"unknown bad-record reason {self.reason!r}; known: {BAD_REASONS}")


def format_qa(question: str, answer: str) -> str:
  """The one text form of a question–answer pair: training dialogue and VQA candidates alike
  (`Q: … A: …`, the grammar the dialogue generators are asked to emit)."""
  return f"Q: {question.strip()} A: {answer.strip()}"


def dialogue_text(dialogue: Sequence[Sequence[str]]) -> str:
  """`concat` mode (CLIP-3Modal default): every pair of the dialogue, in order, one text."""
  return " ".join(format_qa(q, a) for q, a in dialogue)


TEXT_FIELDS = ("caption", "long_caption", "query", "positive")


def _type_name(value: Any) -> str:
  return {dict: "an object", list: "a list", bool: "a boolean", int: "a number",
          float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def stable_id(value: Any) -> int:
  """An int64 image id: integers (and integer strings) as they are, any other string hashed
  (stable across processes and runs, unlike `hash`)."""
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  text = str(value).strip()
  if text.lstrip("-").isdigit():
    return int(text)
  return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def check_fields(record: dict, where: str) -> dict | BadRecord:
  """The record with its fields checked and normalised (`label` to int, `image_id` to int64),
  or a BadRecord naming `where`, the field and what it holds: a caption that is a number or a
  list, a label that is not an integer, a dialogue that is not a list of (question, answer)
  pairs, negatives that are not a list of texts."""
  out = dict(record)
  for field in TEXT_FIELDS:
    if field in out and out[field] is not None and not isinstance(out[field], str):
      return BadRecord("bad_field", f"{where}: {field} is {_type_name(out[field])} "
                                    f"({str(out[field])[:40]}), expected text")
  for field in ("captions", "negatives"):
    value = out.get(field)
    if value is not None and not (isinstance(value, list)
                                  and all(isinstance(v, str) for v in value)):
      return BadRecord("bad_field", f"{where}: {field} is {_type_name(value)}, expected a list "
                                    f"of texts")
  dialogue = out.get("dialogue")
  if dialogue not in (None, "") and not (
      isinstance(dialogue, list) and all(isinstance(p, (list, tuple)) and len(p) == 2
                                         and all(isinstance(t, str) for t in p)
                                         for p in dialogue)):
    return BadRecord("bad_field", f"{where}: dialogue is {_type_name(dialogue)}, expected a "
                                  f"list of [question, answer] pairs")
  label = out.get("label")
  if label not in (None, ""):
    if isinstance(label, bool) or not (isinstance(label, int) or (
        isinstance(label, str) and label.strip().lstrip("-").isdigit()) or (
        isinstance(label, float) and label.is_integer())):
      return BadRecord("bad_field", f"{where}: label {str(label)[:40]!r} is not an integer")
    out["label"] = int(label)
  else:
    out.pop("label", None)
  image = out.get("image")
  if image is not None and not isinstance(image, (str, bytes)) and not hasattr(image, "shape"):
    return BadRecord("bad_field", f"{where}: image is {_type_name(image)}, expected a path")
  if out.get("image_id") not in (None, ""):
    out["image_id"] = stable_id(out["image_id"])
  return out
