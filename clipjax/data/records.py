"""The record schema shared by every source (documented in docs/data.md).

Image–text records: `image` (encoded bytes, a path, or a uint8 [H, W, 3] array), `caption`,
optional `long_caption`, `dialogue` (list of (question, answer) pairs), `label` (int, with a
class-name table kept by the source), `image_id`. Text records: `query`, `positive`,
`negatives` (list). A source that cannot produce a record returns `BadRecord(reason)`, which
the pipeline skips and counts.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

# Why records were skipped; `remainder` counts good records dropped at the end of a finite
# stream that did not fill a batch (pad_remainder=False).
BAD_REASONS = ("missing_file", "corrupt_image", "empty_caption", "bad_json", "missing_dialogue",
               "remainder")


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
