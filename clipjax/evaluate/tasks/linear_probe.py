"""Linear probe: how well frozen image embeddings separate a record attribute (the synthetic
scenes' object count, the main object's position, the background), read by a ridge classifier
fitted in closed form on part of the source and scored on the rest.

The classifier is least squares on one-hot targets with an L2 penalty `alpha` on the weights
(not the intercept): scikit-learn's `RidgeClassifier` up to its ±1 target coding, which does
not change the argmax (tests/evaluate/test_linear_probe.py checks the predictions). Closed form,
so a probe is deterministic and costs one [D, D] solve.
"""
from __future__ import annotations

import numpy as np

from clipjax.data.pipeline import MISSING_FIELD
from clipjax.evaluate.tasks.base import Task, cached_images, register, skipped


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                alpha: float) -> np.ndarray:
  """Predicted classes of test_x [M, D] from a ridge classifier fitted on train_x [N, D] and
  integer train_y [N] (classes absent from training are never predicted)."""
  classes, y = np.unique(train_y, return_inverse=True)
  x = np.asarray(train_x, np.float64)
  x_mean = x.mean(0)
  targets = np.eye(len(classes))[y]
  t_mean = targets.mean(0)
  xc = x - x_mean
  w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (targets - t_mean))
  scores = (np.asarray(test_x, np.float64) - x_mean) @ w + t_mean
  return classes[np.argmax(scores, axis=1)]


@register
class LinearProbe(Task):
  name = "linear_probe"
  settings = {"fields": "count,position,background",  # integer record fields, comma-separated
              "alpha": 1.0,             # the L2 penalty
              "train_fraction": 0.5}    # the first part of the source fits, the rest scores
  default = False  # the synthetic scenes' fields; the seeds study runs it
  probe = True
  headline = (("count", "probe count"), ("position", "probe position"),
              ("background", "probe bg"))

  def evaluate(self, encoders, source, cfg, run, model_name):
    fields = tuple(f.strip() for f in str(cfg.fields).split(",") if f.strip())
    out = cached_images(encoders, source, run, int_fields=fields)  # one read: images + fields
    n = len(out["index"])
    n_train = int(n * float(cfg.train_fraction))
    if not 0 < n_train < n:
      raise ValueError(f"linear_probe: train_fraction={cfg.train_fraction} leaves no "
                       f"train or test rows among {n} images")
    metrics = {}
    for field in fields:
      y = out[field]
      missing = np.flatnonzero(y == MISSING_FIELD)
      if missing.size:
        raise ValueError(f"linear_probe: {source!r} record {int(out['index'][missing[0]])} has "
                         f"no {field!r} field (eval.linear_probe.fields)")
      predicted = ridge_probe(out["embeddings"][:n_train], y[:n_train],
                              out["embeddings"][n_train:], float(cfg.alpha))
      metrics[field] = float(np.mean(predicted == y[n_train:]))
    return {"metrics": metrics, "num_images": n, "skipped": skipped(out["bad_records"])}
