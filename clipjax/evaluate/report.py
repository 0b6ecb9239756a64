"""Tables, JSON and PNG plots of evaluation results."""
from __future__ import annotations

import json
from typing import Any, Sequence

from etils import epath


def format_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
  """A fixed-width text table; floats in [0, 1] are shown as percentages."""
  if not rows:
    return f"{title}: (no rows)"
  columns = list(dict.fromkeys(k for r in rows for k in r))

  def cell(v, column):
    if isinstance(v, float) and column == "beta":
      return f"{v:g}"
    if isinstance(v, float):
      return f"{100 * v:.2f}" if 0.0 <= v <= 1.0 else f"{v:.4g}"
    return str(v)

  body = [[cell(r.get(c, ""), c) for c in columns] for r in rows]
  widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
  line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
  out = [title] if title else []
  out += [line(columns), line(["-" * w for w in widths]), *map(line, body)]
  return "\n".join(out)


def write_json(results: dict, path: str) -> None:
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=1))


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_beta_sweep(rows: Sequence[dict[str, Any]], path: str, title: str) -> None:
  """Every metric of a β sweep against β (β = 1: the original tower only)."""
  plt = _pyplot()
  betas = [r["beta"] for r in rows]
  fig, ax = plt.subplots(figsize=(6, 4))
  for key in rows[0]:
    if key != "beta":
      ax.plot(betas, [100 * r[key] for r in rows], marker="o", label=key)
  ax.set_xlabel("β (weight of the original text tower)")
  ax.set_ylabel("%")
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  _save(fig, path)


def plot_per_class(recall: dict[str, float | None], path: str, title: str) -> None:
  """Per-class recall, sorted, one bar per class present in the evaluation set."""
  plt = _pyplot()
  items = sorted(((v, k) for k, v in recall.items() if v is not None), reverse=True)
  fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(items)), 4))
  ax.bar(range(len(items)), [100 * v for v, _ in items])
  if len(items) <= 100:
    ax.set_xticks(range(len(items)), [k for _, k in items], rotation=90, fontsize=6)
  ax.set_ylabel("recall %")
  ax.set_title(title)
  fig.tight_layout()
  _save(fig, path)


def _save(fig, path: str) -> None:
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    fig.savefig(f, format="png", dpi=120)
  import matplotlib.pyplot as plt
  plt.close(fig)
