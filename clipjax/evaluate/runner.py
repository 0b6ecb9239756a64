"""Runs the configured evaluation tasks for one or more models: tables on stdout, results.json
and PNG plots in the output directory. Used by `python -m clipjax.evaluate` and by training.

Config (`config.eval`): tasks (comma-separated), batch_size, num_workers, betas, and task blocks
`retrieval` {source, text_field}, `zeroshot` {source, classnames, templates}, `vqa` {source},
`text_pairs` {source, query_field, positive_field, negative_field}.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from absl import logging
from etils import epath

from clipjax.config import EVAL_TASKS
from clipjax.data.builder import check_source_spec, make_source
from clipjax.data.synthetic import PROMPT_TEMPLATES
from clipjax.errors import ConfigError
from clipjax.evaluate import report, tasks
from clipjax.evaluate.embed import Encoders
from clipjax.evaluate.zeroshot import load_templates, standard_classnames


def _classnames(spec: str, source) -> list[str]:
  if spec == "source":
    names = getattr(source, "class_names", None)
    if not names:
      raise ValueError(f"zeroshot.classnames='source' but {source!r} has no class names")
    return list(names)
  path = epath.Path(spec)
  if path.exists():
    return [l.strip() for l in path.read_text().splitlines() if l.strip()]
  return standard_classnames(spec)


def _templates(spec: str) -> list[str]:
  if spec == "synthetic":
    return list(PROMPT_TEMPLATES)
  return load_templates(spec)


def eval_tasks(cfg: Mapping[str, Any]) -> list[str]:
  """The tasks the `eval` block names (`tasks`, comma-separated; default retrieval, zeroshot,
  vqa), each checked: a known task, with its own block and a valid source spec (no data read).
  The one parser of `eval.tasks`, for training configs and `clipjax.evaluate` alike."""
  tasks = [t.strip() for t in str(cfg.get("tasks", "retrieval,zeroshot,vqa")).split(",")
           if t.strip()]
  for task in tasks:
    if task not in EVAL_TASKS:
      close = difflib.get_close_matches(task, EVAL_TASKS, n=1)
      raise ConfigError(f"eval.tasks: unknown task {task!r}"
                        + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; use {', '.join(EVAL_TASKS)}")
    if not cfg.get(task):
      raise ConfigError(f"eval.tasks includes {task!r} but the config has no eval.{task} block")
    check_source_spec(cfg[task].source, f"eval.{task}.source")
  return tasks


def run_evaluation(cfg: Mapping[str, Any], models: Mapping[str, Encoders], out_dir: str,
                   blend: tuple[str, str] | None = None, prefix: str = "") -> dict:
  """Evaluates every model on every configured task.

  Args:
    cfg: the `eval` config block. models: name -> Encoders (same image tower for blending).
    out_dir: where results.json and the plots go.
    blend: (original, adapted) model names: adds a β sweep over `cfg.betas` of their text
      embeddings (docs/methods.md §2) to the retrieval and VQA tasks.
  Returns {task: {model or "blend": result}}.
  """
  kw = dict(batch_size=cfg.get("batch_size", 64), num_workers=cfg.get("num_workers", 2),
            cache={})  # image embeddings shared by models with the same image tower
  results: dict[str, Any] = {}
  for task in eval_tasks(cfg):
    task_cfg = cfg.get(task)
    source = make_source(task_cfg["source"])
    per_model, rows = {}, []
    for name, enc in models.items():
      logging.info("evaluating %s: %s on %r", name, task, source)
      if task == "retrieval":
        res = tasks.retrieval([enc], source, text_field=task_cfg.get("text_field", "caption"), **kw)
      elif task == "zeroshot":
        res = tasks.zero_shot(enc, source, _classnames(task_cfg.get("classnames", "source"), source),
                              _templates(task_cfg.get("templates", "synthetic")),
                              cache_path=str(epath.Path(out_dir) / "cache" / f"zeroshot-{enc.key}.npz"),
                              **kw)
        report.plot_per_class(res["per_class_recall"], str(
            epath.Path(out_dir) / f"{prefix}zeroshot_per_class_{name}.png"), f"{name}: per-class recall")
      elif task == "text_pairs":
        res = tasks.text_pairs(enc, source, **{k: task_cfg[k] for k in (
            "query_field", "positive_field", "negative_field") if k in task_cfg}, **kw)
      else:
        res = tasks.vqa([enc], source, **kw)
      per_model[name] = res
      rows.append({"model": name, **res["metrics"]})
      if res["skipped"]:
        logging.warning("%s/%s: skipped unreadable records %s", task, name, res["skipped"])
    print(report.format_table(rows, f"\n{task} ({source!r})"), flush=True)
    if blend and task in ("retrieval", "vqa"):
      towers = [models[blend[0]], models[blend[1]]]
      fn = tasks.retrieval if task == "retrieval" else tasks.vqa
      res = fn(towers, source, betas=list(cfg.get("betas", (1.0, 0.9, 0.0))), **kw)
      per_model["blend"] = res
      title = f"{task}: embedding blend normalise(β·{blend[0]} + (1−β)·{blend[1]})"
      print(report.format_table(res["sweep"], "\n" + title), flush=True)
      report.plot_beta_sweep(res["sweep"], str(epath.Path(out_dir) / f"{prefix}{task}_beta_sweep.png"),
                             title)
    results[task] = per_model
  report.write_json(results, str(epath.Path(out_dir) / f"{prefix}results.json"))
  return results
