"""Runs every arm for every seed as an ordinary `clipjax.main` work dir under OUT/runs, reusing
finished runs, and summarises metrics and claims over the seeds.

A run's directory is named by its arm, seed and a hash of its config; `study_run.json` (written
last, atomically) marks it finished and holds its flattened metrics. A rerun of the study
reuses every finished run whose config is unchanged; an unfinished one restarts in its own
directory; a changed config (another budget, a code change to the arms) gets a new directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import Iterable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from clipjax.data.builder import make_source
from clipjax.evaluate.tasks import eval_options
from clipjax.files import write_atomically
from clipjax.study import stats
from clipjax.study.arms import ARMS, Arm, Budget, arm_config
from clipjax.study.claims import CLAIMS, Claim

DONE = "study_run.json"


def flatten_results(results: dict) -> dict[str, float]:
  """eval/results.json -> {"model/task/metric": value, "blend@β/task/metric": value}."""
  flat = {}
  for task, per_model in results.items():
    for model, res in per_model.items():
      if model == "blend":
        for row in res["sweep"]:
          flat.update({f"blend@{row['beta']}/{task}/{k}": float(v) for k, v in row.items()
                       if k != "beta" and isinstance(v, (int, float))})
      else:
        flat.update({f"{model}/{task}/{k}": float(v) for k, v in res["metrics"].items()
                     if isinstance(v, (int, float))})
  return flat


def config_key(cfg) -> str:
  """The run's config and what its sources hold (`data_fingerprint`): a change to either,
  the synthetic scenes' generator included, makes a new run rather than reusing an old one."""
  digest = hashlib.sha256(cfg.to_json(sort_keys=True).encode())
  digest.update(data_fingerprint(cfg).encode())
  return digest.hexdigest()[:10]


def data_fingerprint(cfg) -> str:
  """A hash of the length and the first and last records of every source the run reads
  (`data.train` and each evaluation task's): images by their pixels, other fields by value."""
  blocks = eval_options(cfg.eval).blocks.values() if cfg.eval else ()
  specs = [cfg.data.train] + [block.source for block in blocks]
  digest = hashlib.sha256()
  for spec in specs:
    source = make_source(spec)
    digest.update(str(len(source)).encode())
    for index in sorted({0, len(source) - 1}) if len(source) else ():
      record = source[index]
      for key in sorted(record) if isinstance(record, dict) else ():
        value = record[key]
        digest.update(key.encode())
        digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
  return digest.hexdigest()


def run_dir(out: str, arm: Arm, seed: int, cfg) -> str:
  return os.path.join(out, "runs", f"{arm.name.replace('/', '-')}-seed{seed}-{config_key(cfg)}")


def _train_and_evaluate(cfg, workdir: str) -> dict:
  """clipjax.main's run in this process, its output in WORKDIR/run.log."""
  from clipjax.main import run  # the trainer; imported late so `--help` stays fast
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "run.log"), "a") as log, \
      contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    return run(cfg, workdir)


def run_arm(arm: Arm, budget: Budget, seed: int, out: str, exports: dict) -> dict:
  """One finished run: {"workdir", "metrics", "seconds", "reused"}."""
  base = exports.get((arm.base, seed)) if arm.base else None
  cfg = arm_config(arm, budget, seed, base)
  workdir = run_dir(out, arm, seed, cfg)
  done = os.path.join(workdir, DONE)
  if os.path.exists(done):
    with open(done) as f:
      return dict(json.load(f), reused=True)
  start = time.perf_counter()
  results = _train_and_evaluate(cfg, workdir)
  record = {"arm": arm.name, "seed": seed, "workdir": workdir,
            "export": os.path.join(workdir, "export", "open_clip_model.safetensors"),
            "seconds": time.perf_counter() - start, "metrics": flatten_results(results)}
  write_atomically(done, json.dumps(record, indent=1))
  return dict(record, reused=False)


def run_study(budget: Budget, seeds: Sequence[int], out: str,
              arms: Iterable[Arm] = ARMS) -> dict[str, dict[int, dict]]:
  """Every arm x seed (bases first), with a progress bar. Returns {arm: {seed: record}}."""
  arms = list(arms)
  jobs = [(arm, seed) for seed in seeds for arm in arms]
  records: dict[str, dict[int, dict]] = {arm.name: {} for arm in arms}
  exports: dict[tuple[str, int], str] = {}
  # Identical programs across seeds and arms compile once (shapes do not depend on the seed):
  # a persistent compilation cache with the study, unless one is configured already.
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  with tqdm(total=len(jobs), desc="study", unit="run") as bar:
    for arm, seed in jobs:
      bar.set_postfix_str(f"{arm.name} seed {seed}")
      record = run_arm(arm, budget, seed, out, exports)
      exports[(arm.name, seed)] = record["export"]
      records[arm.name][seed] = record
      bar.update(1)
  return records


def summarize_arms(records: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict]]:
  """{arm: {metric: Summary fields}} over the arm's seeds."""
  out = {}
  for arm, by_seed in records.items():
    keys = sorted(set.intersection(*(set(r["metrics"]) for r in by_seed.values())))
    out[arm] = {k: dataclasses.asdict(stats.summarize([r["metrics"][k] for r in by_seed.values()]))
                for k in keys}
  return out


def evaluate_claims(records: dict[str, dict[int, dict]],
                    claims: Iterable[Claim] = CLAIMS) -> list[dict]:
  """Each claim's paired difference (same seeds) with its interval and verdict."""
  rows = []
  for claim in claims:
    arm, comparison = records[claim.arm], records[claim.comparison_arm]
    seeds = sorted(set(arm) & set(comparison))
    a = [arm[s]["metrics"][claim.metric] for s in seeds]
    b = [comparison[s]["metrics"][claim.comparison_metric] for s in seeds]
    diff = stats.paired_difference(a, b)
    rows.append({**dataclasses.asdict(claim), "seeds": seeds, "arm_values": a, "comparison_values": b,
                 "difference": dataclasses.asdict(diff),
                 "verdict": stats.verdict(diff, claim.expected)})
  return rows
