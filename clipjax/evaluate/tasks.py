"""Evaluation tasks on a source: retrieval, zero-shot classification, VQA-as-retrieval,
text-text retrieval of paraphrases, and the embedding-blending sweeps. Shared by
`python -m clipjax.evaluate` and the training loop.

Each image is embedded once (through the grain pipeline, with worker processes); each text
tower embeds the texts once; a blending sweep then only mixes embeddings. Records that cannot
be read are counted in the result (`skipped`), never silently dropped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipjax.data.records import BAD_REASONS, BadRecord
from clipjax.data.views import Subset, first_record_per_image
from clipjax.evaluate.blending import blend_embeddings
from clipjax.evaluate.embed import Encoders, embed_images
from clipjax.evaluate.retrieval import retrieval_metrics, retrieval_ranks
from clipjax.evaluate.vqa import vqa_accuracy, vqa_predict
from clipjax.evaluate.zeroshot import (
  per_class_recall,
  zero_shot_classifier,
  zero_shot_metrics,
)


def _skipped(bad: np.ndarray) -> dict[str, int]:
  return {r: int(n) for r, n in zip(BAD_REASONS, bad) if n}


def _unique_images(records: list) -> tuple[list[int], dict]:
  """Source positions of the first record of each image_id, and image_id -> image row."""
  first = first_record_per_image(records)
  return list(first.values()), {key: row for row, key in enumerate(first)}


def _cached_images(encoders: Encoders, source, cache: dict | None, **kw) -> dict:
  """embed_images, reused across models that share an image tower (`Encoders.image_key`)."""
  key = (encoders.image_key, repr(source))
  if cache is not None and key in cache:
    return cache[key]
  out = embed_images(encoders, source, **kw)
  if cache is not None:
    cache[key] = out
  return out


def _embed_unique_images(encoders: Encoders, source, records, batch_size, num_workers, cache):
  first, row = _unique_images(records)
  if not first:
    raise ValueError(f"{source!r} has no readable records")
  out = _cached_images(encoders, Subset(source, first), cache, batch_size=batch_size,
                       num_workers=num_workers)
  ok = np.full(len(first), -1)
  ok[out["index"]] = np.arange(len(out["index"]))  # image row -> embedding row (-1: unreadable)
  bad = out["bad_records"] + np.bincount(
      [BAD_REASONS.index(r.reason) for r in records if isinstance(r, BadRecord)],
      minlength=len(BAD_REASONS))
  return out, ok, row, bad


def _read_all(source) -> list:
  return [source[i] for i in range(len(source))]


def retrieval(text_towers: Sequence[Encoders], source, *, text_field: str = "caption",
              betas: Sequence[float] | None = None, batch_size: int = 64, num_workers: int = 2,
              ks: Sequence[int] = (1, 5, 10), cache: dict | None = None) -> dict:
  """R@k / MRR of the first tower's images against captions; with two text towers and `betas`,
  one row per β of `normalise(β·T0 + (1−β)·T1)` (docs/methods.md §2 blending)."""
  records = _read_all(source)
  out, ok, row, bad = _embed_unique_images(text_towers[0], source, records, batch_size,
                                           num_workers, cache)
  captions, t2i = [], []
  for i, r in enumerate(records):
    if isinstance(r, BadRecord):
      continue
    image_row = ok[row[r.get("image_id", i)]]
    texts = r.get("captions") or [r.get(text_field) or ""]
    if image_row < 0:
      continue  # its image was unreadable and is counted in `skipped`
    captions += texts
    t2i += [image_row] * len(texts)
  t2i = np.asarray(t2i)
  text_emb = [t.encode_texts(captions) for t in text_towers]
  result = {"num_images": int(len(out["embeddings"])), "num_texts": len(captions),
            "skipped": _skipped(bad)}
  if betas is None:
    result["metrics"] = retrieval_metrics(out["embeddings"], text_emb[0], t2i, ks=ks)
  else:
    result["sweep"] = [{"beta": b, **retrieval_metrics(
        out["embeddings"], blend_embeddings(text_emb[0], text_emb[1], b), t2i, ks=ks)}
                       for b in betas]
  return result


def zero_shot(encoders: Encoders, source, classnames: Sequence[str], templates, *,
              cache_path: str | None = None, batch_size: int = 64,
              num_workers: int = 2, cache: dict | None = None) -> dict:
  """top-1 / top-5 / mean per-class recall, plus the per-class recalls for the plot."""
  classifier = zero_shot_classifier(encoders.encode_texts, classnames, templates,
                                    cache_path=cache_path, cache_key=encoders.key)
  out = _cached_images(encoders, source, cache, batch_size=batch_size, num_workers=num_workers)
  if (out["label"] < 0).any():
    raise ValueError(f"zero-shot evaluation needs a label on every record of {source!r}")
  metrics = zero_shot_metrics(out["embeddings"], classifier, out["label"])
  logits = out["embeddings"] @ classifier
  recall = per_class_recall(np.argmax(logits, 1), out["label"], len(classnames))
  return {"metrics": metrics, "num_images": int(len(out["label"])),
          "skipped": _skipped(out["bad_records"]),
          "per_class_recall": {c: (None if np.isnan(v) else float(v))
                               for c, v in zip(classnames, recall)}}


def vqa(text_towers: Sequence[Encoders], source, *, betas: Sequence[float] | None = None,
        batch_size: int = 64, num_workers: int = 2, cache: dict | None = None) -> dict:
  """Multiple-choice (and official, when human answers exist) VQA accuracy; a β sweep with
  two text towers."""
  records = _read_all(source)
  out, ok, row, bad = _embed_unique_images(text_towers[0], source, records, batch_size,
                                           num_workers, cache)
  usable = [r for i, r in enumerate(records) if not isinstance(r, BadRecord)
            and ok[row[r.get("image_id", i)]] >= 0]
  if not usable:
    raise ValueError(f"no VQA question of {source!r} has a readable image")
  sizes = {len(r["candidate_texts"]) for r in usable}
  if len(sizes) != 1:
    raise ValueError(f"VQA questions must all have the same number of candidates, got {sizes}")
  q2i = np.asarray([ok[row[r.get("image_id")]] for r in usable])
  flat = [t for r in usable for t in r["candidate_texts"]]
  answer = np.asarray([r.get("answer", -1) for r in usable])
  humans = [r.get("human_answers") or [] for r in usable]
  has_humans = all(humans)
  types = [r.get("question_type") for r in usable]
  n_cand = sizes.pop()
  cand_emb = [t.encode_texts(flat).reshape(len(usable), n_cand, -1) for t in text_towers]

  def score(emb):
    chosen = vqa_predict(out["embeddings"], emb, q2i)
    return vqa_accuracy(chosen, answer if (answer >= 0).all() else None,
                        [r["candidates"] for r in usable], humans if has_humans else None,
                        types if all(types) else None)

  result = {"num_questions": len(usable), "skipped": _skipped(bad)}
  if betas is None:
    result["metrics"] = score(cand_emb[0])
  else:
    result["sweep"] = [{"beta": b, **score(blend_embeddings(
        cand_emb[0].reshape(len(flat), -1), cand_emb[1].reshape(len(flat), -1), b).reshape(
            cand_emb[0].shape))} for b in betas]
  return result


def text_pairs(encoders: Encoders, source, *, query_field: str = "caption",
               positive_field: str = "paraphrase", negative_field: str = "hard_negative",
               ks: Sequence[int] = (1, 5, 10), **unused) -> dict:
  """Text-text retrieval (the jina paraphrase protocol): each record's query retrieves its own
  positive from a gallery of every record's positive and hard negative (2 x N texts).
  R@k and MRR of the query -> gallery direction; records without the fields are counted in
  `skipped` as missing_field."""
  del unused  # batch_size / num_workers / cache: no images here
  records = _read_all(source)
  usable = [r for r in records if not isinstance(r, BadRecord)
            and all(r.get(f) for f in (query_field, positive_field))]
  if not usable:
    raise ValueError(f"no record of {source!r} has both {query_field!r} and {positive_field!r}")
  queries = [r[query_field] for r in usable]
  gallery = [r[positive_field] for r in usable] + [r[negative_field] for r in usable
                                                  if r.get(negative_field)]
  ranks, _ = retrieval_ranks(encoders.encode_texts(gallery), encoders.encode_texts(queries),
                             np.arange(len(usable)), every_image_captioned=False)
  metrics = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
  metrics["mrr"] = float(np.mean(1.0 / ranks))
  bad = np.bincount([BAD_REASONS.index(r.reason) for r in records if isinstance(r, BadRecord)],
                    minlength=len(BAD_REASONS))
  skipped = _skipped(bad)
  if len(records) - len(usable) - int(bad.sum()):
    skipped["missing_field"] = len(records) - len(usable) - int(bad.sum())
  return {"metrics": metrics, "num_queries": len(queries), "num_gallery": len(gallery),
          "skipped": skipped}
