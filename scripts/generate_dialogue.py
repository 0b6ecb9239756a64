r"""Generate the dialogue field (question-answer pairs about each image) with a vision-language
model, as seed 001 builds its third modality. PyTorch + transformers; the model is read from a
local directory (`save_pretrained` layout), never downloaded.

  python scripts/generate_dialogue.py \
      --source='{"kind": "coco", "annotations": "captions_val2017.json", "image_root": "val2017"}' \
      --model_dir=/models/llava-1.5-7b-hf --out=/data/coco_dialogue [--batch=8] [--limit=1000]

Model types (from the directory's config.json):
- `blip-2` (seed 001 §4.3.1): two chained questions, "What do you see in this image?" then
  "What makes this image unique?", the first answer given as context of the second
  (`Question: q1 Answer: a1. Question: q2 Answer:`); dialogue = [[q1, a1], [q2, a2]].
- `llava` (§4.4.1, LLaVA-1.5 chat format): one prompt asking for exactly three question-answer
  pairs written as lines `Q: ...` / `A: ...` (LLAVA_PROMPT below); `parse_qa` reads them.

Output (readable by `ManifestSource`, i.e. `{"kind": "manifest", "manifest": OUT/dialogues.jsonl}`):
OUT/dialogues.jsonl, one record per image (`image`, `image_id`, `caption`, `dialogue`), images
that were not local files written to OUT/images/, and OUT/generation_stats.json with the counts.
Resume: rerunning with the same --out skips every image_id already in dialogues.jsonl (a line
cut by an interruption is dropped and regenerated). Generations that do not parse (LLaVA: fewer
than three Q/A pairs; BLIP-2: an empty answer) and bad source records are counted, not written.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

from absl import app, flags

from clipjax import cli
from clipjax.files import atomic_path, write_atomically

flags.DEFINE_string("source", None, "Data source spec as JSON (clipjax.data.builder kinds).")
flags.DEFINE_string("model_dir", None, "Local directory of a BLIP-2 or LLaVA model + processor.")
flags.DEFINE_string("out", None, "Output directory (created; resumed when it exists).")
flags.DEFINE_integer("batch", 8, "Images per generate() call.")
flags.DEFINE_integer("limit", 0, "Stop after this many source records (0: all).")
flags.DEFINE_integer("max_new_tokens", 96, "Generation length limit per prompt.")
flags.DEFINE_string("device", "cpu", "torch device.")
FLAGS = flags.FLAGS

BLIP2_QUESTIONS = ("What do you see in this image?", "What makes this image unique?")
LLAVA_PROMPT = ("USER: <image>\nAsk three different questions about this image (its objects, "
                "their attributes, counts and positions) and answer each one. Write exactly six "
                "lines and nothing else, alternating\nQ: <question>\nA: <answer>\nASSISTANT:")
NUM_PAIRS = 3
SUPPORTED = ("blip-2", "llava")
_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(q|question|a|answer)\s*\d*\s*(?:\*\*)?\s*[:：]"
                   r"\s*(?:\*\*)?\s*(.*?)\s*$", re.IGNORECASE)


def parse_qa(text: str, pairs: int = NUM_PAIRS) -> list[list[str]] | None:
  """`Q: ...` / `A: ...` lines -> the first `pairs` [question, answer] pairs, or None when the
  text holds fewer complete pairs. Tolerates numbering (`1. Q:`, `Q1:`), `Question:` /
  `Answer:`, bold markers and blank lines; an answer may continue on following plain lines."""
  out, question, answer = [], None, None
  for line in text.splitlines():
    m = _LINE.match(line)
    if m is None:
      if answer is not None and line.strip():
        answer += " " + line.strip()
      continue
    kind, body = m.group(1).lower()[0], m.group(2).strip()
    if kind == "q":
      if question is not None and answer:
        out.append([question, answer])
      question, answer = body, None
    elif question is not None and answer is None:
      answer = body
  if question is not None and answer:
    out.append([question, answer])
  out = [[q, a] for q, a in out if q and a]
  return out[:pairs] if len(out) >= pairs else None


def model_type(model_dir: str) -> str:
  """The directory's model_type, checked: a clear error for a missing or unsupported model."""
  config = Path(model_dir) / "config.json"
  if not config.is_file():
    raise FileNotFoundError(f"{model_dir}: no config.json; --model_dir must be a local BLIP-2 or "
                            f"LLaVA directory written by save_pretrained")
  kind = json.loads(config.read_text()).get("model_type")
  if kind not in SUPPORTED:
    raise ValueError(f"{model_dir}: model_type {kind!r} is not supported; supported: "
                     f"{', '.join(SUPPORTED)}")
  return kind


class Generator:
  """Batched generation with one model; `__call__(images) -> list of dialogues or None`."""

  def __init__(self, model_dir: str, device: str = "cpu", max_new_tokens: int = 96):
    import torch
    import transformers
    self.kind = model_type(model_dir)
    self.torch, self.device, self.max_new_tokens = torch, device, max_new_tokens
    self.processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    self.processor.tokenizer.padding_side = "left"  # decoder-only LMs continue on the right
    self.model = transformers.AutoModelForImageTextToText.from_pretrained(
        model_dir, local_files_only=True).to(device).eval()

  def _generate(self, images, prompts: list[str]) -> list[str]:
    inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
    inputs = inputs.to(self.device)
    with self.torch.no_grad():
      out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

  def __call__(self, images) -> list[list[list[str]] | None]:
    if self.kind == "llava":
      return [parse_qa(t) for t in self._generate(images, [LLAVA_PROMPT] * len(images))]
    q1, q2 = BLIP2_QUESTIONS
    first = self._generate(images, [f"Question: {q1} Answer:"] * len(images))
    second = self._generate(images, [f"Question: {q1} Answer: {a1}. Question: {q2} Answer:"
                                     for a1 in first])
    return [[[q1, a1], [q2, a2]] if a1 and a2 else None for a1, a2 in zip(first, second)]


def _finished_ids(manifest: Path) -> set:
  """image_ids already written; a last line cut by an interruption is removed."""
  if not manifest.exists():
    return set()
  data = manifest.read_bytes()
  if data and not data.endswith(b"\n"):
    data = data[:data.rfind(b"\n") + 1]
    manifest.write_bytes(data)
  return {json.loads(line)["image_id"] for line in data.decode().splitlines() if line.strip()}


def _image_entry(record: dict, key: str, images_dir: Path):
  """(PIL image, manifest `image` value): local files are referenced, others written out."""
  import numpy as np
  from PIL import Image
  image = record["image"]
  if isinstance(image, (str, os.PathLike)) and "://" not in str(image):
    return Image.open(image).convert("RGB"), os.path.abspath(image)
  if isinstance(image, np.ndarray):
    pil, data, ext = Image.fromarray(image), None, "png"
  else:
    if not isinstance(image, bytes):
      from etils import epath
      image = epath.Path(image).read_bytes()
    pil, data = Image.open(io.BytesIO(image)), image
    ext = (pil.format or "jpg").lower().replace("jpeg", "jpg")
  images_dir.mkdir(parents=True, exist_ok=True)
  path = images_dir / f"{key}.{ext}"
  if data is None:
    with atomic_path(path) as tmp:
      pil.save(tmp, format="PNG")
  else:
    write_atomically(path, data)
  return pil.convert("RGB"), f"images/{path.name}"


def generate(source, generate_fn, out: str | os.PathLike, batch: int = 8, limit: int = 0) -> dict:
  """Runs `generate_fn(list of PIL images) -> dialogues` over `source`, appending to
  OUT/dialogues.jsonl; returns (and writes) the counts."""
  from tqdm.auto import tqdm

  from clipjax.data.records import BadRecord
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  manifest = out / "dialogues.jsonl"
  done = _finished_ids(manifest)
  stats = dict(written=0, resumed_skipped=0, unparsable=0, bad_records=0)
  total = min(len(source), limit) if limit else len(source)
  pending = []

  def flush(f):
    dialogues = generate_fn([p[0] for p in pending])
    for (_, row), dialogue in zip(pending, dialogues):
      if dialogue is None:
        stats["unparsable"] += 1
        continue
      f.write(json.dumps(dict(row, dialogue=dialogue)) + "\n")
      stats["written"] += 1
    f.flush()
    pending.clear()

  with manifest.open("a") as f:
    for index in tqdm(range(total), desc="dialogues", unit="img"):
      record = source[index]
      if isinstance(record, BadRecord):
        stats["bad_records"] += 1
        continue
      key = record.get("image_id", index)
      key = key.item() if hasattr(key, "item") else key
      if key in done:
        stats["resumed_skipped"] += 1
        continue
      try:
        image, entry = _image_entry(record, str(key), out / "images")
      except (OSError, ValueError):
        stats["bad_records"] += 1
        continue
      pending.append((image, {"image": entry, "image_id": key,
                              "caption": record.get("caption") or ""}))
      if len(pending) == batch:
        flush(f)
    if pending:
      flush(f)
  (out / "generation_stats.json").write_text(json.dumps(stats, indent=2))
  return stats


def main(argv):
  del argv
  from clipjax.data.builder import make_source
  for name in ("source", "model_dir", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  generator = Generator(FLAGS.model_dir, FLAGS.device, FLAGS.max_new_tokens)
  stats = generate(make_source(json.loads(FLAGS.source)), generator, FLAGS.out, FLAGS.batch,
                   FLAGS.limit)
  print(json.dumps(stats))


if __name__ == "__main__":
  cli.run(main)
