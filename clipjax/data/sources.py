"""Random-access record sources (grain data sources: `__len__` + `__getitem__`).

Each returns records of the schema in `clipjax.data.records`, or a `BadRecord` for a record
it cannot produce (an undecodable JSON line, an empty caption), which the pipeline skips and
counts. Images stay encoded (bytes or a path) until the pipeline's decode step. Paths may be
local or any `etils.epath` URL (`gs://...`).
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import defaultdict
from typing import Any, Sequence

from etils import epath

from clipjax.data.records import BadRecord, format_qa


def _path(p) -> epath.Path:
  return epath.Path(p)


class ManifestSource:
  """A JSONL or CSV manifest next to an image folder.

  Each line/row: `image` (path relative to `image_root`, default the manifest's folder),
  `caption` or a `captions` list, and optionally `long_caption`, `dialogue` (JSONL: list of
  [q, a]; CSV: a JSON string), `label`, `image_id`. A line with a `captions` list gives one
  record per caption, sharing the line's `image_id` (as the COCO source does). A line that is
  not valid JSON becomes BadRecord("bad_json"). Every record carries `where`
  (`manifest:line`), so a skipped record can be found again.
  """

  def __init__(self, manifest: str, image_root: str | None = None):
    self.manifest = _path(manifest)
    if not self.manifest.exists():
      raise FileNotFoundError(f"manifest {self.manifest} does not exist")
    self.image_root = _path(image_root) if image_root else self.manifest.parent
    text = self.manifest.read_text()
    rows: list[tuple[int, Any]] = []  # (line number, row dict or BadRecord)
    if self.manifest.suffix == ".csv":
      for number, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
        try:
          if row.get("dialogue"):
            row["dialogue"] = json.loads(row["dialogue"])
          if row.get("captions"):
            row["captions"] = json.loads(row["captions"])
        except json.JSONDecodeError as e:
          row = BadRecord("bad_json", f"{self.manifest}:{number}: {e}")
        rows.append((number, row))
    elif self.manifest.suffix in (".jsonl", ".json"):
      for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
          continue
        try:
          rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
          rows.append((number, BadRecord("bad_json", f"{self.manifest}:{number}: {e}")))
    else:
      raise ValueError(f"manifest {self.manifest} must be .jsonl or .csv")
    # One item per record: (row index, caption index or None for the row's own `caption`).
    self._rows = rows
    self._items: list[tuple[int, int | None]] = []
    for i, (_, row) in enumerate(rows):
      captions = row.get("captions") if isinstance(row, dict) else None
      if isinstance(captions, list) and captions and not row.get("caption"):
        self._items.extend((i, c) for c in range(len(captions)))
      else:
        self._items.append((i, None))

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
    if "image" in row:  # text-only manifests (query/positive/negatives) have none
      record["image"] = str(self.image_root / row["image"])
    record.setdefault("image_id", row_index)
    if "label" in record and record["label"] not in (None, ""):
      record["label"] = int(record["label"])
    return record


class CocoCaptionsSource:
  """COCO-format captions (`captions_*.json`) + image folder: one record per caption, with
  `image_id` so retrieval can group the (usually five) captions of an image."""

  def __init__(self, annotations: str, image_root: str):
    self.annotations, self.image_root = _path(annotations), _path(image_root)
    data = json.loads(self.annotations.read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    missing = [a["image_id"] for a in data["annotations"] if a["image_id"] not in files]
    if missing:
      raise ValueError(f"{self.annotations}: captions refer to unknown image ids {missing[:5]}")
    self._items = [(a["image_id"], files[a["image_id"]], a["caption"]) for a in data["annotations"]]
    self.image_ids = sorted(files)

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    image_id, file_name, caption = self._items[index]
    return dict(image=str(self.image_root / file_name), caption=caption, image_id=image_id)


_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


class WebDatasetSource:
  """WebDataset / img2dataset `.tar` shards (`key.jpg` + `key.txt` + optional `key.json`).

  Shards are indexed once (member names, offsets, sizes) and members are read by offset into
  memory: nothing is ever extracted to disk by the member's own path.
  """

  def __init__(self, shards: Sequence[str]):
    self.shards = [_path(s) for s in shards]
    self._index: list[tuple[int, dict[str, tuple[int, int]]]] = []
    for shard_id, shard in enumerate(self.shards):
      groups: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
      with shard.open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
          if not member.isfile():
            continue
          stem, _, ext = member.name.rpartition(".")
          groups[stem]["." + ext.lower()] = (member.offset_data, member.size)
      for stem in sorted(groups):
        self._index.append((shard_id, groups[stem]))

  def __len__(self) -> int:
    return len(self._index)

  def _read(self, shard_id: int, where: tuple[int, int]) -> bytes:
    offset, size = where
    with self.shards[shard_id].open("rb") as f:
      f.seek(offset)
      return f.read(size)

  def __getitem__(self, index: int):
    shard_id, parts = self._index[index]
    image_ext = next((e for e in _IMAGE_EXTS if e in parts), None)
    record: dict[str, Any] = {"image_id": index}
    if image_ext is None:
      return BadRecord("missing_file", f"{self.shards[shard_id]}: sample {index} has no image")
    record["image"] = self._read(shard_id, parts[image_ext])
    if ".txt" in parts:
      record["caption"] = self._read(shard_id, parts[".txt"]).decode("utf-8", "replace")
    if ".json" in parts:
      try:
        meta = json.loads(self._read(shard_id, parts[".json"]))
      except json.JSONDecodeError as e:
        return BadRecord("bad_json", f"{self.shards[shard_id]} sample {index}: {e}")
      for key in ("caption", "long_caption", "dialogue", "label"):
        if key in meta and key not in record:
          record[key] = meta[key]
    return record


class TfdsSource:
  """A TFDS dataset prepared in a local (or gs://) `data_dir` in array_record format, read with
  `tfds` random access (no TensorFlow needed). Never downloads: a missing dataset is an error
  saying how to prepare it.

  Fields map to the schema: `image_key` (uint8 array or encoded image), `caption_key` (text;
  a list of captions gives `captions` too, the first as `caption`), `label_key` (ClassLabel;
  its names become `class_names`), `id_key`.
  """

  def __init__(self, name: str, split: str, data_dir: str, image_key: str = "image",
               caption_key: str | None = None, label_key: str | None = "label",
               id_key: str | None = None):
    import tensorflow_datasets as tfds
    hint = (f"prepare it on a machine with internet access with `tfds build {name.split('/')[0]} "
            f"--data_dir={data_dir} --file_format=array_record` and copy that folder here")
    try:
      builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except Exception as e:  # unknown name, or a config that does not exist
      raise FileNotFoundError(f"TFDS dataset {name!r} is not available in {data_dir}: {e}; "
                              f"{hint}") from e
    if not epath.Path(builder.data_dir).exists():
      raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {data_dir} (no "
                              f"{builder.data_dir}); {hint}")
    if str(builder.info.file_format.value) not in ("array_record", "parquet"):
      raise ValueError(f"TFDS dataset {name!r} in {data_dir} is stored as "
                       f"{builder.info.file_format.value}, which has no random access; {hint}")
    self._source = builder.as_data_source(split=split)
    self.image_key, self.caption_key, self.label_key, self.id_key = (image_key, caption_key,
                                                                     label_key, id_key)
    features = builder.info.features
    label_feature = features[label_key] if label_key and label_key in features.keys() else None
    self.class_names = list(label_feature.names) if hasattr(label_feature, "names") else None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    example = self._source[index]
    text = lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    record: dict[str, Any] = {"image": example[self.image_key],
                              "image_id": int(example[self.id_key]) if self.id_key else index}
    if self.caption_key:
      value = example[self.caption_key]
      captions = [text(v) for v in value] if isinstance(value, (list, tuple)) or getattr(
          value, "ndim", 0) else [text(value)]
      record.update(caption=captions[0] if captions else "", captions=captions)
    if self.label_key:
      record["label"] = int(example[self.label_key])
    return record


class VQAv1Source:
  """VQA v1 multiple-choice JSON files + COCO (or abstract-scene) image folder.

  questions: `{"questions": [{"question_id", "image_id", "question", "multiple_choices"}]}`;
  annotations (optional): `{"annotations": [{"question_id", "multiple_choice_answer",
  "answers": [{"answer"}...]}]}`. `image_pattern` names an image from its id, e.g.
  `COCO_val2014_{image_id:012d}.jpg` or `abstract_v002_val2015_{image_id:012d}.png`.
  Records: image, image_id, question, candidates, candidate_texts, answer (index or -1),
  human_answers.
  """

  def __init__(self, questions: str, image_root: str, annotations: str | None = None,
               image_pattern: str = "COCO_val2014_{image_id:012d}.jpg"):
    qpath = epath.Path(questions)
    if not qpath.exists():
      raise FileNotFoundError(f"VQA questions file {questions} does not exist")
    self._questions = json.loads(qpath.read_text())["questions"]
    missing = [q["question_id"] for q in self._questions if not q.get("multiple_choices")]
    if missing:
      raise ValueError(f"{questions}: {len(missing)} questions have no `multiple_choices` (e.g. "
                       f"{missing[0]}); multiple-choice evaluation needs the MC questions file")
    self._answers = {}
    if annotations:
      for a in json.loads(epath.Path(annotations).read_text())["annotations"]:
        self._answers[a["question_id"]] = a
    self.image_root, self.image_pattern = epath.Path(image_root), image_pattern

  def __len__(self) -> int:
    return len(self._questions)

  def __getitem__(self, index: int) -> dict:
    q = self._questions[index]
    candidates = list(q["multiple_choices"])
    ann = self._answers.get(q["question_id"])
    answer = candidates.index(ann["multiple_choice_answer"]) if (
        ann and ann["multiple_choice_answer"] in candidates) else -1
    return dict(image=str(self.image_root / self.image_pattern.format(image_id=q["image_id"])),
                image_id=q["image_id"], question=q["question"], candidates=candidates,
                candidate_texts=[format_qa(q["question"], c) for c in candidates], answer=answer,
                human_answers=[a["answer"] for a in ann["answers"]] if ann else [])
