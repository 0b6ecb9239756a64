"""Text–text retrieval (the jina paraphrase protocol, docs/methods.md §8): each record's query
retrieves its own positive from a gallery of every record's positive and hard negative."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipjax.data.records import BadRecord
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.retrieval import retrieval_ranks
from clipjax.evaluate.tasks.base import Task, bad_counts, read_all, register, skipped


def text_pairs(encoders: Encoders, source, *, query_field: str = "caption",
               positive_field: str = "paraphrase", negative_field: str = "hard_negative",
               ks: Sequence[int] = (1, 5, 10)) -> dict:
  """R@k and MRR of the query -> gallery (2 x N texts) direction; records without the fields
  are counted in `skipped` as missing_field."""
  records = read_all(source)
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
  bad = bad_counts(records)
  result = {"metrics": metrics, "num_queries": len(queries), "num_gallery": len(gallery),
            "skipped": skipped(bad)}
  if len(records) - len(usable) - int(bad.sum()):
    result["skipped"]["missing_field"] = len(records) - len(usable) - int(bad.sum())
  return result


@register
class TextPairs(Task):
  name = "text_pairs"
  settings = {"query_field": "caption", "positive_field": "paraphrase",
              "negative_field": "hard_negative"}  # record fields
  default = False
  headline = (("recall@1", "text-text R@1"),)

  def evaluate(self, encoders, source, cfg, run, model_name):
    return text_pairs(encoders, source, **{k: cfg[k] for k in self.settings})
