"""Random-access record sources of published data sets (grain data sources: `__len__` +
`__getitem__`): COCO captions, TFDS, VQA v1. Users' own files are read by
`clipjax.data.manifest`, `clipjax.data.folder` and `clipjax.data.shards`.

Each returns records of the schema in `clipjax.data.records`, or a `BadRecord` for a record
it cannot produce, which the pipeline skips and counts. Images stay encoded (bytes or a path)
until the pipeline's decode step. Paths may be local or any `etils.epath` URL (`gs://...`).
"""
from __future__ import annotations

import json
from typing import Any

from etils import epath

from clipjax.data.records import check_fields, format_qa


def _path(p) -> epath.Path:
  return epath.Path(p)


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
    self._items = [(a["image_id"], files[a["image_id"]], a.get("caption"))
                   for a in data["annotations"]]
    self.image_ids = sorted(files)

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    image_id, file_name, caption = self._items[index]
    return check_fields(dict(image=str(self.image_root / file_name), caption=caption,
                             image_id=image_id, where=f"{self.annotations}:annotation {index}"),
                        f"{self.annotations}:annotation {index}")


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
    self._where = f"tfds:{name}[{split}]"
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
                              "image_id": int(example[self.id_key]) if self.id_key else index,
                              "where": f"{self._where}:{index}"}
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
