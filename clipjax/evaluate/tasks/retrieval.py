"""Image–text retrieval (docs/methods.md §8): R@k and MRR both ways over every caption of a
source; with two text towers, a β sweep of their blended caption embeddings."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipjax.data.records import BadRecord
from clipjax.evaluate.blending import blend_embeddings
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.retrieval import retrieval_metrics
from clipjax.evaluate.tasks.base import (
  EvalRun,
  Task,
  embed_unique_images,
  read_all,
  register,
  skipped,
)


def retrieval(text_towers: Sequence[Encoders], source, run: EvalRun | None = None, *,
              text_field: str = "caption", betas: Sequence[float] | None = None,
              ks: Sequence[int] = (1, 5, 10)) -> dict:
  """R@k / MRR of the first tower's images against captions; with two text towers and `betas`,
  one row per β of `normalise(β·T0 + (1−β)·T1)` (docs/methods.md §2 blending)."""
  run = run or EvalRun("")
  records = read_all(source)
  out, ok, row, bad = embed_unique_images(text_towers[0], source, records, run)
  captions, t2i = [], []
  for i, r in enumerate(records):
    if isinstance(r, BadRecord):
      continue
    image_row = ok[row[r.get("image_id", i)]]
    if not r.get("captions") and text_field not in r:
      raise ValueError(f"{source!r} record {i} has no {text_field!r} field to read as its "
                       f"caption (the task's text_field); it has {sorted(r)}")
    texts = r.get("captions") or [r.get(text_field) or ""]
    if image_row < 0:
      continue  # its image was unreadable and is counted in `skipped`
    captions += texts
    t2i += [image_row] * len(texts)
  t2i = np.asarray(t2i)
  text_emb = [t.encode_texts(captions) for t in text_towers]
  result = {"num_images": int(len(out["embeddings"])), "num_texts": len(captions),
            "skipped": skipped(bad)}
  if betas is None:
    result["metrics"] = retrieval_metrics(out["embeddings"], text_emb[0], t2i, ks=ks)
  else:
    result["sweep"] = [{"beta": b, **retrieval_metrics(
        out["embeddings"], blend_embeddings(text_emb[0], text_emb[1], b), t2i, ks=ks)}
                       for b in betas]
  return result


@register
class Retrieval(Task):
  name = "retrieval"
  settings = {"text_field": "caption"}  # the record field read as the caption
  headline = (("image_retrieval_recall@1", "img R@1"), ("image_retrieval_recall@5", "img R@5"),
              ("image_retrieval_mrr", "img MRR"), ("text_retrieval_recall@1", "txt R@1"),
              ("text_retrieval_recall@5", "txt R@5"), ("text_retrieval_mrr", "txt MRR"))
  sweep_metric = "image_retrieval_recall@1"

  def evaluate(self, encoders, source, cfg, run, model_name):
    return retrieval([encoders], source, run, text_field=cfg.text_field)

  def sweep(self, towers, source, cfg, run, betas):
    return retrieval(towers, source, run, text_field=cfg.text_field,
                     betas=betas)


@register
class FullCaptionRetrieval(Retrieval):
  """Retrieval read on another caption field, `full_caption` by default: the synthetic scenes'
  caption naming every object and the background, whatever the source's `caption_detail`
  (partial captions tie: scenes sharing a main object share one, so their R@1 cannot move).
  Off by default (the study evaluates it); for other sources name a field they have."""
  name = "retrieval_full"
  settings = {"text_field": "full_caption"}
  default = False
  caption_detail = "full"
