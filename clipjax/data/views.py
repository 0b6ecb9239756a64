"""Views of sources: random-access objects (`len`, `[i]`) over another source's records, so
pipelines compose them without copying data. BadRecords pass through every view unchanged."""
from __future__ import annotations

from typing import Callable, Sequence

from clipjax.data.records import BadRecord


class MapRecords:
  """A source whose good records are `fn(record, index)` of another's."""

  def __init__(self, source, fn: Callable[[dict, int], dict]):
    self.source, self.fn = source, fn

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    record = self.source[index]
    return record if isinstance(record, BadRecord) else self.fn(record, index)


class SafeRecords:
  """`source` whose reads never raise: any exception while reading record i becomes a
  BadRecord("error") naming the index and the exception, so one unreadable record (a flaky
  file system, a malformed shard member) is counted instead of ending a week-long run."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    try:
      return self.source[index]
    except Exception as e:  # noqa: BLE001 (the reason of this class)
      return BadRecord("error", f"record {index} of {type(self.source).__name__}: "
                                f"{type(e).__name__}: {e}"[:500])


class Subset:
  """The records of `source` at `indices`, in that order."""

  def __init__(self, source, indices: Sequence[int]):
    self.source, self.indices = source, list(indices)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    return self.source[self.indices[i]]

  def __repr__(self) -> str:
    return f"{len(self.indices)} images of {self.source!r}"


class OneQAPerSample:
  """`one_qa` dialogue mode (DRAFT default): record i of the source becomes `pairs` samples,
  one per question–answer pair, so the dataset grows `pairs`-fold (docs/methods.md §3)."""

  def __init__(self, source, pairs: int = 3):
    self.source, self.pairs = source, pairs

  def __len__(self) -> int:
    return len(self.source) * self.pairs

  def __getitem__(self, index: int):
    record = self.source[index // self.pairs]
    if isinstance(record, BadRecord):
      return record
    dialogue = record.get("dialogue") or []
    if len(dialogue) < self.pairs:
      return BadRecord("missing_dialogue", f"record {index // self.pairs} has {len(dialogue)} "
                                           f"QA pairs, expected {self.pairs}")
    return dict(record, dialogue=[dialogue[index % self.pairs]])


class CachedInputs:
  """The training source with cached inputs replaced: each image by its `image_embedding` row
  from `table` (an `EmbeddingTable`, read here, in the data workers) and, with
  `captions=True`, each caption by its `record_index` (the source position, the key of the
  host's caption table). Records whose image could not be embedded become
  BadRecord("corrupt_image"), empty cached captions BadRecord("empty_caption"): counted like
  any other bad record.

  prefix "teacher_": the rows are another model's outputs (distill's cached teacher), added as
  `teacher_image_embedding` (+ `record_index`) beside the image and caption, which stay."""

  def __init__(self, source, table, captions: bool = False, prefix: str = ""):
    self.source, self.table, self.captions, self.prefix = source, table, captions, prefix

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    record = self.source[index]
    if isinstance(record, BadRecord):
      return record
    image_id = int(record.get("image_id", index))
    row = self.table.get(image_id)
    if row is None:
      return BadRecord("corrupt_image", f"image_id {image_id}: unreadable when caching")
    replaced = set() if self.prefix else {"image", *(("caption",) if self.captions else ())}
    out = dict({k: v for k, v in record.items() if k not in replaced}, image_id=image_id)
    out[f"{self.prefix}image_embedding"] = row
    if self.captions:
      if not (record.get("caption") or "").strip():
        return BadRecord("empty_caption", f"image_id {image_id}: empty caption")
      out["record_index"] = index
    return out


class ImageFiles:
  """Records {"image": path, "image_id": i} of a list of image files (a photo folder)."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int):
    return {"image": self.paths[i], "image_id": i}

  def __repr__(self) -> str:
    return f"{len(self.paths)} images"


def first_record_per_image(records) -> dict:
  """image_id (the position when absent) -> position of its first good record, in order."""
  first: dict = {}
  for i in range(len(records)):
    record = records[i]
    if not isinstance(record, BadRecord):
      first.setdefault(record.get("image_id", i), i)
  return first
