"""Zero-shot classification (docs/methods.md §8): a prompt-ensembled classifier from the class
names; top-1 / top-5 / mean per-class recall, and a per-class recall plot per model."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from etils import epath

from clipjax.data.synthetic import PROMPT_TEMPLATES
from clipjax.evaluate import report
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.tasks.base import EvalRun, Task, cached_images, register, skipped
from clipjax.evaluate.zeroshot import (
  load_templates,
  per_class_recall,
  standard_classnames,
  zero_shot_classifier,
  zero_shot_metrics,
)


def class_names(spec: str, source) -> list[str]:
  """`source` (the source's own class names), a file with one name per line, or a standard
  list (`imagenet1k`, `cifar10`, ...)."""
  if spec == "source":
    names = getattr(source, "class_names", None)
    if not names:
      raise ValueError(f"zeroshot.classnames='source' but {source!r} has no class names")
    return list(names)
  path = epath.Path(spec)
  if path.exists():
    return [l.strip() for l in path.read_text().splitlines() if l.strip()]
  return standard_classnames(spec)


def prompt_templates(spec: str) -> list[str]:
  """`synthetic` (the synthetic scenes' templates) or what `load_templates` takes."""
  if spec == "synthetic":
    return list(PROMPT_TEMPLATES)
  return load_templates(spec)


def zero_shot(encoders: Encoders, source, classnames: Sequence[str], templates,
              run: EvalRun | None = None, *, cache_path: str | None = None) -> dict:
  """top-1 / top-5 / mean per-class recall, plus the per-class recalls for the plot."""
  run = run or EvalRun("")
  classifier = zero_shot_classifier(encoders.encode_texts, classnames, templates,
                                    cache_path=cache_path, cache_key=encoders.key)
  out = cached_images(encoders, source, run)
  if (out["label"] < 0).any():
    raise ValueError(f"zero-shot evaluation needs a label on every record of {source!r}")
  metrics = zero_shot_metrics(out["embeddings"], classifier, out["label"])
  logits = out["embeddings"] @ classifier
  recall = per_class_recall(np.argmax(logits, 1), out["label"], len(classnames))
  return {"metrics": metrics, "num_images": int(len(out["label"])),
          "skipped": skipped(out["bad_records"]),
          "per_class_recall": {c: (None if np.isnan(v) else float(v))
                               for c, v in zip(classnames, recall)}}


@register
class ZeroShot(Task):
  name = "zeroshot"
  settings = {"classnames": "source",    # see `class_names`
              "templates": "synthetic"}  # see `prompt_templates`
  headline = (("top1", "0-shot top-1"),)

  def evaluate(self, encoders, source, cfg, run, model_name):
    res = zero_shot(encoders, source, class_names(cfg.classnames, source),
                    prompt_templates(cfg.templates), run,
                    cache_path=str(epath.Path(run.out_dir) / "cache" /
                                   f"zeroshot-{encoders.key}.npz"))
    if run.plots:
      report.plot_per_class(res["per_class_recall"],
                            run.path(f"zeroshot_per_class_{model_name}.png"),
                            f"{model_name}: per-class recall")
    return res
