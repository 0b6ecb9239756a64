"""The study's outputs: study.json, the markdown claims table and its plots (PNG files in a
`results/` folder next to the markdown, linked relatively)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clipjax.data.synthetic import QUESTION_TYPES  # noqa: E402
from clipjax.evaluate.blending import THESIS_BETAS as BETAS  # noqa: E402
from clipjax.evaluate.tasks import get_task, task_names  # noqa: E402
from clipjax.files import write_atomically  # noqa: E402
from clipjax.study import stats  # noqa: E402


def headline() -> tuple[tuple[str, str], ...]:
  """(task/metric, column title) of every registered task's headline metrics."""
  return tuple((f"{name}/{metric}", title) for name in task_names()
               for metric, title in get_task(name).headline)


def _pp(x: float) -> str:
  """A fraction as percentage points."""
  return "∞" if math.isinf(x) else f"{100 * x:.1f}"


def _interval(s: dict) -> str:
  if s["n"] < 2:
    return f"{100 * s['mean']:+.1f} (1 seed: no interval)"
  return f"{100 * s['mean']:+.1f} [{100 * s['low']:+.1f}, {100 * s['high']:+.1f}]"


def _next_seed(s: dict) -> str:
  """The prediction interval of one more seed's difference."""
  if s["n"] < 2:
    return "(1 seed: no interval)"
  return f"[{100 * s['next_low']:+.1f}, {100 * s['next_high']:+.1f}]"


def _mean_sd(s: dict) -> str:
  return _pp(s["mean"]) if s["n"] < 2 else f"{_pp(s['mean'])} ± {_pp(s['sd'])}"


def claims_table(claims: Sequence[dict]) -> str:
  lines = ["| claim | source | reported | compared (same seed) | ours: Δ pp [95 % CI] | "
           "next seed's Δ [95 % PI] | verdict |",
           "|---|---|---|---|---|---|---|"]
  for c in claims:
    compared = (f"{c['arm']} `{c['metric']}` − {c['comparison_arm']} "
                f"`{c['comparison_metric']}`")
    lines.append(f"| {c['text']} | {c['source']} | {c['reported']} | {compared} | "
                 f"{_interval(c['difference'])} | {_next_seed(c['difference'])} | "
                 f"{c['verdict']} |")
  return "\n".join(lines)


def _models(summary: dict) -> list[str]:
  """Model prefixes of an arm's metric keys (blends: only β = 0.9), in first-seen order."""
  seen = []
  for key in summary:
    model = key.split("/", 1)[0]
    if model.startswith("blend@") and model != "blend@0.9":
      continue
    if model not in seen:
      seen.append(model)
  return seen


def arm_tables(summaries: dict[str, dict], docs: dict[str, str]) -> str:
  out, columns = [], headline()
  for arm, summary in summaries.items():
    out += [f"### {arm}", "", docs.get(arm, ""), "",
            "| model | " + " | ".join(label for _, label in columns) + " |",
            "|---|" + "---|" * len(columns)]
    for model in _models(summary):
      cells = [_mean_sd(summary[f"{model}/{k}"]) if f"{model}/{k}" in summary else "—"
               for k, _ in columns]
      out.append(f"| {model} | " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out)


def plot_beta_sweeps(summaries: dict[str, dict], path: str, metric: str, title: str) -> bool:
  """Mean over seeds vs β for every arm with a blend sweep, with the 95 % band."""
  fig, ax = plt.subplots(figsize=(6, 4))
  drawn = False
  for arm, summary in summaries.items():
    points = [(b, summary[f"blend@{b}/{metric}"]) for b in BETAS
              if f"blend@{b}/{metric}" in summary]
    if not points:
      continue
    xs = [b for b, _ in points]
    ax.plot(xs, [100 * s["mean"] for _, s in points], marker="o", label=arm)
    if all(s["n"] > 1 for _, s in points):
      ax.fill_between(xs, [100 * s["low"] for _, s in points],
                      [100 * s["high"] for _, s in points], alpha=0.15)
    drawn = True
  if drawn:
    ax.set_xlabel("β (1 = base text tower, 0 = adapted tower alone)")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
  plt.close(fig)
  return drawn


def plot_vqa_types(summaries: dict[str, dict], bars: Sequence[tuple[str, str]], path: str) -> bool:
  """Grouped bars of VQA accuracy per question type; bars: (arm, model) pairs."""
  present = [(arm, model) for arm, model in bars if arm in summaries]
  types = [t for t in QUESTION_TYPES["partial"] if any(
      f"{m}/vqa/multiple_choice_accuracy/{t}" in summaries[a] for a, m in present)]
  if not present or not types:
    return False
  fig, ax = plt.subplots(figsize=(8, 4))
  width = 0.8 / len(present)
  for i, (arm, model) in enumerate(present):
    stats = [summaries[arm].get(f"{model}/vqa/multiple_choice_accuracy/{t}") for t in types]
    means = [100 * s["mean"] if s else 0.0 for s in stats]
    errors = [100 * (s["high"] - s["mean"]) if s and s["n"] > 1 else 0.0 for s in stats]
    ax.bar([j + i * width for j in range(len(types))], means, width, yerr=errors,
           label=f"{arm}: {model}", capsize=2)
  ax.set_xticks([j + 0.4 - width / 2 for j in range(len(types))], types)
  ax.set_ylabel("multiple-choice accuracy (%)")
  ax.set_title("VQA per question type (95 % interval over seeds)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return True


def probe_table(summaries: dict[str, dict]) -> str:
  """Linear-probe accuracy (mean ± sd, %) of every arm's own model that ran the probe."""
  fields = [(k.rsplit("/", 1)[1], k) for k in next(
      (s for s in summaries.values() if any("/linear_probe/" in k for k in s)), {})
      if "/linear_probe/" in k and k.startswith("clip/")]
  rows = [f"| {arm} | " + " | ".join(_mean_sd(s[k]) for _, k in fields) + " |"
          for arm, s in summaries.items() if all(k in s for _, k in fields)]
  if not fields or not rows:
    return ""
  return "\n".join(["| arm | " + " | ".join(f for f, _ in fields) + " |",
                    "|---|" + "---|" * len(fields), *rows])


def _paired(study: dict, arm: str, metric: str, comparison: str) -> dict | None:
  """Paired difference (same seeds) of `metric` between two arms, or None if either lacks it."""
  a, b = study["arms"].get(arm, {}), study["arms"].get(comparison, {})
  seeds = [s for s in a if s in b and metric in a[s]["metrics"] and metric in b[s]["metrics"]]
  if not seeds:
    return None
  return dataclasses.asdict(stats.paired_difference(
      [a[s]["metrics"][metric] for s in seeds], [b[s]["metrics"][metric] for s in seeds]))


def premise_section(study: dict, claims: Sequence[dict]) -> list[str]:
  """The thesis's premise on the partial arms: the base's linear probe against the untrained
  model, DRAFT + blend against the caption-only control per VQA question type, and a reading
  that follows the claims' intervals."""
  summaries, lines = study["summaries"], ["## The premise", ""]
  probe = probe_table({a: summaries[a] for a in ("init", "clip", "base/full", "base/partial")
                       if a in summaries})
  if probe:
    budget = study["budget"]
    gains = [(f, _paired(study, "base/full", f"clip/linear_probe/{f}", "init"))
             for f in ("count", "position", "background")]
    lines += [f"Does the base's frozen image embedding separate the facts the dialogues tell? "
              f"A ridge classifier on frozen image embeddings of {budget['probe_size']} "
              "held-out scenes (half fit, half scored; accuracy %, mean ± sd over seeds; "
              f"`init`: the same model untrained, `clip`: {budget['scratch_steps']} steps "
              f"from scratch, `base/full`: the base, {budget['base_steps']} steps):", "",
              probe, ""]
    if all(d for _, d in gains):  # what the adaptation can align the text tower to
      lines += ["The base over its untrained model (pp, paired by seed): " + ", ".join(
          f"{f} {_interval(d)}" for f, d in gains) + ". A text tower adapted with the frozen "
          "image tower can only align to what that embedding separates.", ""]
  rows = []
  for qtype in ("", *(f"/{t}" for t in QUESTION_TYPES["partial"])):
    cells = [summaries.get("draft/partial", {}).get(f"base/vqa/multiple_choice_accuracy{qtype}")]
    for model in ("draft", "blend@0.9"):  # the adapted towers alone, then blended
      key = f"{model}/vqa/multiple_choice_accuracy{qtype}"
      cells += [summaries.get("caption_only/partial", {}).get(key),
                summaries.get("draft/partial", {}).get(key),
                _paired(study, "draft/partial", key, "caption_only/partial")]
    if all(cells):
      rows.append(f"| {qtype[1:] or 'all'} | " + " | ".join(
          _interval(c) if i in (3, 6) else _mean_sd(c) for i, c in enumerate(cells)) + " |")
  if rows:
    lines += ["VQA on partial captions per question type (%, mean ± sd; Δ DRAFT − control "
              "paired by seed with its 95 % interval), the adapted towers alone (β = 0) and "
              "blended (β = 0.9):", "",
              "| question type | base | control | DRAFT | Δ | control + blend | "
              "DRAFT + blend | Δ blended |", "|---|---|---|---|---|---|---|---|", *rows, ""]
  for claim_id, what in (("dialogue_beats_captions_alone/partial", "the adapted text tower "
                                                                   "alone (β = 0)"),
                         ("dialogue_beats_captions/partial", "DRAFT + blend (β = 0.9)")):
    premise = next((c for c in claims if c["id"] == claim_id), None)
    if premise is None:
      continue
    d = premise["difference"]
    if premise["verdict"] == "agrees":
      lines.append(f"The premise shows for {what}: with the dialogues it answers "
                   f"{_interval(d)} pp more of the partial VQA than the caption-only control "
                   "with the same steps, learning rate and blends.")
    else:
      lines.append(f"The premise does not show for {what} at this scale: minus the "
                   f"caption-only control it is {_interval(d)} pp on the partial VQA "
                   f"({premise['verdict']}).")
    lines.append("")
  return lines


def write_report(study: dict, md_path: str, arm_docs: dict[str, str]) -> list[str]:
  """results markdown at md_path, plots in <its folder>/results/. Returns the files written."""
  folder = os.path.join(os.path.dirname(os.path.abspath(md_path)), "results")
  os.makedirs(folder, exist_ok=True)
  summaries, claims = study["summaries"], study["claims"]
  plots = []
  for task in map(get_task, task_names()):
    if not task.sweep_metric:
      continue
    metric, name = f"{task.name}/{task.sweep_metric}", f"beta_sweep_{task.name}.png"
    title = f"embedding blend: {dict(headline()).get(metric, metric)} vs β"
    if plot_beta_sweeps(summaries, os.path.join(folder, name), metric, title):
      plots.append((name, title))
  bars = [("draft/partial", "base"), ("draft/partial", "draft"), ("draft/partial", "blend@0.9"),
          ("draft_no_mmd/partial", "blend@0.9"), ("caption_only/partial", "blend@0.9"),
          ("three_tower/partial", "blend@0.9")]
  if plot_vqa_types(summaries, bars, os.path.join(folder, "vqa_question_types.png")):
    plots.append(("vqa_question_types.png", "VQA per question type (partial captions)"))
  budget = study["budget"]
  unsettled = [c for c in claims if c["verdict"] != "agrees"]
  lines = [
      "# Results: the source documents' claims in miniature", "",
      f"Generated by `{study['command']}` — do not edit the numbers by hand, rerun the "
      "command. Every arm is an ordinary `clipjax.main` run on the embedded synthetic scenes "
      f"(seeds {', '.join(map(str, study['seeds']))}; {budget['arch']}, "
      f"{budget['resolution']} px, batch {budget['batch_size']}, the base "
      f"{budget['base_steps']} steps, {budget['scratch_steps']} steps from scratch, "
      f"{budget['adapt_steps']} adaptation steps; evaluation on "
      f"{budget['eval_size']} held-out scenes; {study['runs']} runs taking "
      f"{study['run_minutes']:.0f} min to train and evaluate on {study['machine']}).", "",
      "Δ is arm − comparison in percentage points, paired by seed (the same initialisation "
      "and data order), with a 95 % Student-t interval over the seeds, and the 95 % "
      "prediction interval in which one more seed's Δ is expected to fall (wider: it adds "
      "that seed's own spread to the mean's uncertainty). The verdict, from the 95 % "
      "interval of the mean, is "
      "\"agrees\" or \"disagrees\" only when the whole interval lies on one side of 0, else "
      "\"inconclusive (interval spans 0)\".", "",
      "## Design", "",
      "The thesis adapts a CLIP pretrained on web-scale data, whose frozen image tower already "
      "encodes counts, positions, the other objects and the background, on short COCO "
      "captions plus VisDial dialogues that spell those details out. The miniature mirrors "
      "it: one base per seed is pretrained on full captions (every object, where it is, "
      "and the background; longer than the other runs, standing in for web-scale "
      "pretraining), then DRAFT, DRAFT without MMD, "
      "CLIP-3Modal and a caption-only control adapt that base on partial captions (the main "
      "object only) plus, except the control, dialogues that tell the count, the "
      "background, the main object's position and its neighbour. The same four adapting "
      "the base on full captions, and the from-scratch methods against CLIP trained from "
      "scratch for as many steps, complete the source documents' claims.", "",
      "VQA on the partial arms asks only what the dialogues reveal (count, other objects, "
      "position, background; accuracy per type below), so a text tower that learned the "
      "dialogues can answer what the partial captions never state. Retrieval is read on "
      "full captions (`retrieval_full`: the queries a user would write, no ties), as well as "
      "on partial ones, whose identical captions cap R@1. A linear probe checks that the "
      "base's frozen image embedding separates the facts at all (the premise section). The "
      "earlier design, a base pretrained on partial captions only, stays available as "
      "`--study=partial_base`.", "",
      "## Claims", "", claims_table(claims), "", *premise_section(study, claims),
      "## Where the miniature differs", "",
      "Every claim that is inconclusive or disagrees here, with what our setting changes "
      "from the document's (steps, scale, data):", ""]
  for c in unsettled:
    lines += [f"- **{c['text']}**: {c['verdict']} ({c['source']}, reported {c['reported']}; "
              f"ours {_interval(c['difference'])} pp). What differs: "
              f"{c['differs'].format(**budget)}.", ""]
  if not unsettled:
    lines += ["Every claim agrees at this number of seeds.", ""]
  lines += ["## Plots", ""] + [f"![{title}](results/{name})\n" for name, title in plots]
  lines += ["## Arms (mean ± sd over seeds, %)", "", arm_tables(summaries, arm_docs)]
  write_atomically(md_path, "\n".join(lines).rstrip() + "\n")
  return [md_path] + [os.path.join(folder, name) for name, _ in plots]


def json_safe(x):
  """Non-finite floats (the interval of one seed) as null: strict JSON."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(study: dict, path: str) -> None:
  write_atomically(path, json.dumps(json_safe(study), indent=1, allow_nan=False))
