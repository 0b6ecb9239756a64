r"""The seeds study: every arm trained and evaluated for several seeds, the source documents'
claims checked with paired differences and 95 % intervals.

  python -m clipjax.study --study=seeds --docs          # the committed table (from the repo)
  python -m clipjax.study --study=seeds --quick         # 1 seed, tiny steps: the machinery
  python -m clipjax.study --study=seeds --seeds=3,4 --out=/tmp/study

Everything a run writes goes under --out: OUT/study.json, OUT/results.md and its plots
(OUT/results/*.png), and one ordinary `clipjax.main` work dir per arm and seed under OUT/runs;
rerunning reuses the finished ones (keyed by config). The committed docs/results.md and
docs/results/ are rewritten only with --docs, run from the repository root, with the default
seeds (or seeds named on purpose with --seeds), never from a --quick run.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time

import jax
from absl import flags, logging

from clipjax import cli
from clipjax.errors import UserError
from clipjax.study import report
from clipjax.study.arms import ARMS, DEFAULT, PARTIAL_BASE_ARMS, QUICK
from clipjax.study.claims import CLAIMS, PARTIAL_BASE_CLAIMS
from clipjax.study.runner import evaluate_claims, run_study, summarize_arms

# study -> (arms, claims): "seeds" tests the premise (a full-caption base adapted on partial
# captions + dialogues); "partial_base" the earlier design (a base pretrained on partial
# captions only, which never learned what the dialogues tell).
STUDIES = {"seeds": (ARMS, CLAIMS), "partial_base": (PARTIAL_BASE_ARMS, PARTIAL_BASE_CLAIMS)}
_STUDY = flags.DEFINE_string("study", None, "The study to run: seeds (the premise) or "
                                            "partial_base (a base pretrained on partial "
                                            "captions only).")
_SEEDS = flags.DEFINE_string("seeds", None, "Comma-separated seeds (default: 0,1,2,3,4; --quick: 0).")
_QUICK = flags.DEFINE_bool("quick", False, "One seed, tiny model and steps: a few minutes.")
_OUT = flags.DEFINE_string("out", None, "Output dir (default: workdirs/study, "
                                        "workdirs/study_quick with --quick).")
_DOCS = flags.DEFINE_bool("docs", False, "Also rewrite the committed docs/results.md and "
                                         "docs/results/ (run from the repository root).")


def _seeds(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
  if text is None:
    return default
  try:
    seeds = tuple(int(s) for s in text.split(",") if s.strip())
  except ValueError:
    raise UserError(f"--seeds={text!r}: expected comma-separated integers, e.g. 0,1,2") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds={text!r}: expected one or more distinct integers")
  return seeds


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  if _STUDY.value not in STUDIES:
    raise UserError(f"--study={_STUDY.value!r} is not one of {list(STUDIES)}"
                    if _STUDY.value else f"--study is required: one of {list(STUDIES)}")
  if not flags.FLAGS["verbosity"].present:  # the runs' INFO lines would bury the progress bar
    logging.set_verbosity(logging.WARNING)
  budget = QUICK if _QUICK.value else DEFAULT
  seeds = _seeds(_SEEDS.value, budget.seeds)
  out = os.path.abspath(_OUT.value or os.path.join(
      "workdirs", "study_quick" if _QUICK.value else "study"))
  doc = os.path.join("docs", "results.md") if _DOCS.value else ""
  if _DOCS.value:
    if _STUDY.value != "seeds":
      raise UserError(f"--docs writes the committed table of --study=seeds, not "
                      f"--study={_STUDY.value}")
    if _QUICK.value:
      raise UserError("--docs rewrites the committed results: run without --quick")
    if seeds != DEFAULT.seeds and _SEEDS.value is None:
      raise UserError(f"--docs writes seeds {list(DEFAULT.seeds)} unless --seeds names others")
    if not os.path.isfile(doc):
      raise UserError(f"--docs: {os.path.abspath(doc)} does not exist (run from the "
                      f"repository root)")
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()
  arms, claims = STUDIES[_STUDY.value]
  records = run_study(budget, seeds, out, arms)
  run_seconds = sum(r["seconds"] for by_seed in records.values() for r in by_seed.values())
  command = "python -m clipjax.study " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  study = {"study": _STUDY.value, "command": command.strip(), "seeds": list(seeds),
           "budget": dataclasses.asdict(budget),
           "runs": sum(len(v) for v in records.values()),
           "machine": f"{jax.devices()[0].device_kind} x {jax.device_count()}, "
                      f"{os.cpu_count()} CPU cores",
           "minutes": (time.perf_counter() - start) / 60, "run_minutes": run_seconds / 60,
           "arms": {arm: {str(s): r for s, r in by_seed.items()}
                    for arm, by_seed in records.items()},
           "summaries": summarize_arms(records), "claims": evaluate_claims(records, claims)}
  report.write_json(study, os.path.join(out, "study.json"))
  docs = {arm.name: arm.doc for arm in arms}
  written = report.write_report(study, os.path.join(out, "results.md"), docs)
  if doc:
    written += report.write_report(study, doc, docs)
  print(report.claims_table(study["claims"]))
  print("\nwritten:\n" + "\n".join(f"  {p}" for p in [os.path.join(out, "study.json"),
                                                        *written]))


if __name__ == "__main__":
  cli.run(main)
