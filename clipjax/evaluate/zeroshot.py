"""Zero-shot classification with prompt ensembles (docs/methods.md §8).

class embedding = normalise(mean over templates of normalised prompt embeddings);
logits = 100 · normalise(image) · W; top-1, top-5 (when there are >= 5 classes) and mean
per-class recall (balanced accuracy over the classes present in the labels).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
from typing import Callable, Mapping, Sequence

import numpy as np
from etils import epath

from clipjax.evaluate.embed import unit_rows
from clipjax.files import atomic_path

Templates = Sequence[str] | Mapping[str, Sequence[str]]
TextEncodeFn = Callable[[list[str]], np.ndarray]


def _prompts_dir() -> epath.Path:
  return epath.Path(str(importlib.resources.files("clipjax.third_party"))) / "clip_benchmark_prompts"


def standard_templates(name: str) -> list[str]:
  """OpenAI's templates as shipped with CLIP_benchmark: `imagenet1k` (80), `cifar10`,
  `cifar100` (18 each); `{c}` marks the class name."""
  table = json.loads((_prompts_dir() / "templates.json").read_text())
  if name not in table:
    raise KeyError(f"no standard templates named {name!r}; known: {sorted(table)}")
  return table[name]


def standard_classnames(name: str) -> list[str]:
  """`imagenet1k` (OpenAI's cleaned names) or `cifar10`, in label order."""
  table = json.loads((_prompts_dir() / "classnames.json").read_text())
  if name not in table:
    raise KeyError(f"no standard class names for {name!r}; known: {sorted(table)}")
  return table[name]


def load_templates(spec: str) -> list[str]:
  """A standard template set by name, or a text file with one template per line (`{c}` or `{}`
  for the class name; blank lines and lines starting with # are ignored)."""
  path = epath.Path(spec)
  if not path.exists():
    return standard_templates(spec)
  lines = [l.strip() for l in path.read_text().splitlines()]
  templates = [l for l in lines if l and not l.startswith("#")]
  if not templates:
    raise ValueError(f"template file {spec} contains no templates")
  return templates


def _fill(template: str, name: str) -> str:
  if "{c}" not in template and "{}" not in template:
    raise ValueError(f"template {template!r} has no class-name placeholder ({{c}} or {{}})")
  return template.replace("{c}", name).replace("{}", name)


def zero_shot_classifier(text_encode_fn: TextEncodeFn, classnames: Sequence[str],
                         templates: Templates, cache_path: str | None = None,
                         cache_key: str = "") -> np.ndarray:
  """Class embeddings W [D, C] (columns unit-norm), as CLIP_benchmark's zero_shot_classifier.

  Args:
    text_encode_fn: list of strings -> [n, D] embeddings (normalised or not).
    classnames: C names. templates: a list with `{c}`/`{}` placeholders, or a dict
      classname -> its own prompts (CuPL-style).
    cache_path: if set, W is stored there (.npz) and reused when the model key, class names and
      templates are the same; `cache_key` identifies the model (e.g. a parameter fingerprint).
  """
  classnames = list(classnames)
  if not classnames:
    raise ValueError("zero-shot classification needs at least one class name")
  if not templates:
    raise ValueError("zero-shot classification needs at least one prompt template")
  prompts = [list(templates[c]) if isinstance(templates, Mapping) else
             [_fill(t, c) for t in templates] for c in classnames]
  digest = hashlib.sha256(json.dumps([cache_key, prompts]).encode()).hexdigest()
  if cache_path is not None:
    path = str(cache_path)  # a local file (the cache lives in the work dir)
    if epath.Path(path).exists():
      with open(path, "rb") as f:
        cached = np.load(f)
        if str(cached["digest"]) == digest:
          return cached["weights"]
  flat = [p for ps in prompts for p in ps]
  emb = unit_rows(text_encode_fn(flat))
  bounds = np.cumsum([0] + [len(ps) for ps in prompts])
  weights = unit_rows(np.stack([emb[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])).T
  if cache_path is not None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
      np.savez(f, weights=weights, digest=np.asarray(digest))
  return weights


def zero_shot_logits(image_emb: np.ndarray, classifier: np.ndarray) -> np.ndarray:
  """[N, C] = 100 · normalise(image_emb) @ classifier."""
  image_emb = unit_rows(image_emb)
  if image_emb.shape[1] != classifier.shape[0]:
    raise ValueError(f"image embeddings have size {image_emb.shape[1]} but the classifier was "
                     f"built with size {classifier.shape[0]} (another model?)")
  return 100.0 * image_emb @ classifier


def per_class_recall(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Recall of every class [C]; NaN for classes absent from `labels`."""
  total = np.bincount(labels, minlength=num_classes).astype(np.float64)
  hits = np.bincount(labels[predictions == labels], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, hits / total, np.nan)


def zero_shot_metrics(image_emb: np.ndarray, classifier: np.ndarray,
                      labels: np.ndarray) -> dict[str, float]:
  """top-1, top-5 (if >= 5 classes) and mean per-class recall of images [N, D] against W [D, C]."""
  labels = np.asarray(labels, np.int64)
  num_classes = classifier.shape[1]
  if labels.shape != (len(image_emb),):
    raise ValueError(f"expected one label per image ({len(image_emb)}), got {labels.shape}")
  if len(labels) == 0:
    raise ValueError("zero-shot evaluation got no images")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
  logits = zero_shot_logits(image_emb, classifier)
  order = np.argsort(-logits, axis=1, kind="stable")
  metrics = {"top1": float(np.mean(order[:, 0] == labels))}
  if num_classes >= 5:
    metrics["top5"] = float(np.mean((order[:, :5] == labels[:, None]).any(1)))
  recall = per_class_recall(order[:, 0], labels, num_classes)
  metrics["mean_per_class_recall"] = float(np.nanmean(recall))
  return metrics
