"""Runs the configured evaluation tasks for one or more models: tables on stdout, results.json
and PNG plots in the output directory. Used by `python -m clipjax.evaluate` and by training.

Config (`config.eval`, read by `clipjax.evaluate.tasks.eval_options`): tasks (comma-separated
names of `clipjax.evaluate.tasks`), batch_size, num_workers, betas, plots (False: tables and
results.json only), and one block per task, `config.eval.<task>` = {source, the task's own
settings} (`clipjax.evaluate.tasks.eval_block` writes them all).
"""
from __future__ import annotations

from typing import Any, Mapping

from absl import logging

from clipjax.data.builder import make_source
from clipjax.evaluate import report
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.tasks import EvalRun, eval_tasks
from clipjax.options import EvalOptions


def run_evaluation(cfg: EvalOptions, models: Mapping[str, Encoders], out_dir: str,
                   blend: tuple[str, str] | None = None, prefix: str = "") -> dict:
  """Evaluates every model on every configured task.

  Args:
    cfg: the `eval` block (`clipjax.evaluate.tasks.eval_options`). models: name -> Encoders (same image tower for blending).
    out_dir: where results.json and the plots go (file names start with `prefix`).
    blend: (original, adapted) model names: adds a β sweep over `cfg.betas` of their text
      embeddings (docs/methods.md §2) to the tasks that have one (retrieval, VQA).
  Returns {task: {model or "blend": result}}.
  """
  run = EvalRun(out_dir, prefix, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                plots=cfg.plots)
  results: dict[str, Any] = {}
  for task in eval_tasks(cfg):
    task_cfg = cfg.blocks[task.name]
    source = make_source(task_cfg["source"])
    per_model, rows = {}, []
    for name, enc in models.items():
      logging.info("evaluating %s: %s on %r", name, task.name, source)
      res = per_model[name] = task.evaluate(enc, source, task_cfg, run, name)
      rows.append({"model": name, **res["metrics"]})
      if res["skipped"]:
        logging.warning("%s/%s: skipped unreadable records %s", task.name, name, res["skipped"])
    print(report.format_table(rows, f"\n{task.name} ({source!r})"), flush=True)
    if blend and task.sweep_metric:
      res = per_model["blend"] = task.sweep([models[blend[0]], models[blend[1]]], source,
                                            task_cfg, run, list(cfg.betas))
      title = f"{task.name}: embedding blend normalise(β·{blend[0]} + (1−β)·{blend[1]})"
      print(report.format_table(res["sweep"], "\n" + title), flush=True)
      if run.plots:
        report.plot_beta_sweep(res["sweep"], run.path(f"{task.name}_beta_sweep.png"), title)
    results[task.name] = per_model
  report.write_json(results, run.path("results.json"))
  return results
