"""VQA as retrieval (methods.md §8): embed `format_qa(question, candidate)` for every candidate,
pick the one closest to the image; multiple-choice accuracy, and the official VQA accuracy
when ten human answers exist.

The official accuracy follows the VQA evaluation script (vqaEval.py, VQA v1/v2): answers are
trimmed; when the humans disagree, their answers get the punctuation rule and the prediction
gets punctuation + number words + articles + contractions; then for each of the ten
leave-one-annotator-out subsets, min(#matching answers among the other nine / 3, 1), averaged.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from clipjax.evaluate.embed import unit_rows

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# The evaluator restores apostrophes of common contractions typed without them.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt":
    "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd":
    "it'd", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "shant": "shan't", "shed": "she'd", "shes": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "somebodys": "somebody's", "someones":
    "someone's", "thats": "that's", "thered": "there'd", "theres": "there's", "theyd": "they'd",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "weve":
    "we've", "werent": "weren't", "whats": "what's", "whered": "where'd", "wheres": "where's",
    "whos": "who's", "whove": "who've", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre":
    "you're", "youve": "you've"}


def _punctuation(text: str) -> str:
  out = text
  for p in _PUNCT:
    if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out)


def _digits_articles(text: str) -> str:
  words = [_NUMBERS.get(w, w) for w in text.lower().split() if w not in _ARTICLES]
  return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
  """The evaluator's full normalisation of a predicted answer."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return _digits_articles(_punctuation(answer))


def official_vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
  """VQA accuracy of one predicted answer against the (ten) human answers."""
  humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in human_answers]
  if not humans:
    raise ValueError("official VQA accuracy needs the human answers of the question")
  pred = prediction.replace("\n", " ").replace("\t", " ").strip()
  if len(set(humans)) > 1:
    humans = [_punctuation(a) for a in humans]
    pred = normalize_answer(pred)
  scores = [min(1.0, sum(h == pred for j, h in enumerate(humans) if j != i) / 3)
            for i in range(len(humans))]
  return float(np.mean(scores))


def vqa_predict(image_emb: np.ndarray, candidate_emb: np.ndarray,
                question_to_image: np.ndarray) -> np.ndarray:
  """Index of the chosen candidate per question.

  Args: image_emb [N_images, D]; candidate_emb [Q, C, D] (question + each answer, embedded);
    question_to_image int [Q]. Returns int [Q].
  """
  image_emb, cand = unit_rows(image_emb), unit_rows(candidate_emb)
  if cand.ndim != 3 or cand.shape[-1] != image_emb.shape[-1]:
    raise ValueError(f"candidate_emb must be [Q, C, {image_emb.shape[-1]}], got {cand.shape}")
  scores = np.einsum("qcd,qd->qc", cand, image_emb[np.asarray(question_to_image)])
  return np.argmax(scores, axis=1)


def vqa_accuracy(chosen: np.ndarray, answer: np.ndarray | None = None,
                 candidates: Sequence[Sequence[str]] | None = None,
                 human_answers: Sequence[Sequence[str]] | None = None,
                 question_types: Sequence[str] | None = None) -> dict[str, float]:
  """`multiple_choice_accuracy` (chosen == answer index), per question type as
  `multiple_choice_accuracy/<type>` when `question_types` are given, and, given the candidate
  strings and the human answers, `vqa_accuracy` (official). Values in [0, 1]."""
  chosen = np.asarray(chosen)
  metrics = {}
  if answer is not None:
    right = chosen == np.asarray(answer)
    metrics["multiple_choice_accuracy"] = float(np.mean(right))
    if question_types is not None:
      types = np.asarray(question_types)
      for kind in sorted(set(types.tolist())):
        metrics[f"multiple_choice_accuracy/{kind}"] = float(np.mean(right[types == kind]))
  if human_answers is not None:
    if candidates is None:
      raise ValueError("official VQA accuracy needs the candidate answer strings")
    metrics["vqa_accuracy"] = float(np.mean([
        official_vqa_accuracy(c[k], h) for c, k, h in zip(candidates, chosen, human_answers)]))
  return metrics
