"""VQA as retrieval (docs/methods.md §8): each question's candidate answers, as question–answer
texts, ranked against the image; multiple-choice (and official, with human answers) accuracy,
per question type when the records have one; a β sweep with two text towers."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipjax.data.records import BadRecord
from clipjax.evaluate.blending import blend_embeddings
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.tasks.base import (
  EvalRun,
  Task,
  embed_unique_images,
  read_all,
  register,
  skipped,
)
from clipjax.evaluate.vqa import vqa_accuracy, vqa_predict


def vqa(text_towers: Sequence[Encoders], source, run: EvalRun | None = None, *,
        betas: Sequence[float] | None = None) -> dict:
  """Multiple-choice (and official, when human answers exist) VQA accuracy; a β sweep with
  two text towers."""
  run = run or EvalRun("")
  records = read_all(source)
  out, ok, row, bad = embed_unique_images(text_towers[0], source, records, run)
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

  result = {"num_questions": len(usable), "skipped": skipped(bad)}
  if betas is None:
    result["metrics"] = score(cand_emb[0])
  else:
    result["sweep"] = [{"beta": b, **score(blend_embeddings(
        cand_emb[0].reshape(len(flat), -1), cand_emb[1].reshape(len(flat), -1), b).reshape(
            cand_emb[0].shape))} for b in betas]
  return result


@register
class VQA(Task):
  name = "vqa"
  split = "vqa"  # the synthetic scenes' questions
  headline = (("multiple_choice_accuracy", "VQA"),)
  sweep_metric = "multiple_choice_accuracy"

  def evaluate(self, encoders, source, cfg, run, model_name):
    return vqa([encoders], source, run)

  def sweep(self, towers, source, cfg, run, betas):
    return vqa(towers, source, run, betas=betas)
