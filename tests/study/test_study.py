"""The seeds study: `python -m clipjax.study --study=seeds --quick` end to end as a user types
it (every claim row, the JSON fields, the plots, ordinary work dirs, a rerun that reuses every
finished run), its user errors, and the summaries against the statistics module on fixed
numbers. The test checks the machinery, never which way a claim comes out."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, xla_flags

from clipjax.study import stats
from clipjax.study.arms import ARMS, QUICK, arm_config
from clipjax.study.claims import CLAIMS, Claim
from clipjax.study.report import claims_table
from clipjax.study.runner import config_key, evaluate_claims, flatten_results, summarize_arms


def _study(*args, cwd=None, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO),
             HF_HUB_OFFLINE="1")
  return subprocess.run([sys.executable, "-m", "clipjax.study", *args], env=env, cwd=cwd,
                        capture_output=True, text=True, timeout=timeout)


def _files(*folders):
  """{path: (size, mtime)} of every file under `folders` (absent ones: none)."""
  return {os.path.join(root, f): (os.stat(os.path.join(root, f)).st_size,
                                  os.stat(os.path.join(root, f)).st_mtime_ns)
          for folder in folders for root, _, files in os.walk(folder) for f in files}


@pytest.mark.timeout(900)
def test_quick_study_end_to_end_and_resume(tmp_path):
  """Run from the repository root as a user would: everything goes under --out, and the
  committed results (docs/results.md, docs/results/) and the default output folder are left
  as they were."""
  out = tmp_path / "study"
  committed = (REPO / "docs", REPO / "workdirs")
  before = _files(*committed)
  first = _study("--study=seeds", "--quick", f"--out={out}", cwd=REPO)
  assert first.returncode == 0, first.stderr[-3000:]
  study = json.loads((out / "study.json").read_text())
  assert {"study", "command", "seeds", "budget", "runs", "arms", "summaries", "claims"} <= set(study)
  assert study["seeds"] == [0] and study["runs"] == len(ARMS)
  assert [c["id"] for c in study["claims"]] == [c.id for c in CLAIMS]
  for claim in study["claims"]:
    assert {"difference", "verdict", "arm_values", "comparison_values", "reported"} <= set(claim)
    assert claim["difference"]["n"] == 1 and claim["difference"]["low"] is None  # 1 seed
    assert claim["difference"]["next_low"] is None
    assert claim["verdict"] == "inconclusive (interval spans 0)"
  md = (out / "results.md").read_text()
  for claim in CLAIMS:
    assert f"| {claim.text} | {claim.source} |" in md
  for png in ("beta_sweep_retrieval.png", "beta_sweep_vqa.png", "vqa_question_types.png"):
    assert (out / "results" / png).read_bytes()[:4] == b"\x89PNG"
    assert f"(results/{png})" in md
  for arm in ARMS:  # ordinary clipjax.main work dirs, one per arm and seed
    record = study["arms"][arm.name]["0"]
    workdir = record["workdir"]
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert os.path.exists(os.path.join(workdir, "eval", "results.json"))
    assert not [f for f in os.listdir(os.path.join(workdir, "eval")) if f.endswith(".png")]
    assert os.path.exists(record["export"])
  metrics = study["arms"]["draft/partial"]["0"]["metrics"]
  assert {"base/vqa/multiple_choice_accuracy/count", "base/vqa/multiple_choice_accuracy/position",
          "blend@0.9/vqa/multiple_choice_accuracy", "draft/retrieval/image_retrieval_mrr",
          "blend@0.9/retrieval_full/image_retrieval_recall@1",
          "base/text_pairs/recall@1"} <= set(metrics)
  # the linear probe: the base, its untrained model (which runs only the probe), CLIP from scratch
  probe = {"clip/linear_probe/count", "clip/linear_probe/position", "clip/linear_probe/background"}
  for arm in ("base/full", "clip", "init"):
    assert probe <= set(study["arms"][arm]["0"]["metrics"]), arm
  assert set(study["arms"]["init"]["0"]["metrics"]) == probe
  assert not any("linear_probe" in k for k in metrics)  # adaptations keep the base's image tower
  assert "## The premise" in md and "| init | " in md and "| base/full | " in md
  assert "The base over its untrained model (pp, paired by seed): count " in md
  assert "## Where the miniature differs" in md and "{" not in md.split("## Where")[1]
  # the premise: the partial-caption arms adapt the base pretrained on full captions
  base_export = study["arms"]["base/full"]["0"]["export"]
  draft_config = json.loads((out / "runs" / os.path.basename(
      study["arms"]["draft/partial"]["0"]["workdir"]) / "config.json").read_text())
  assert draft_config["model"]["checkpoint"] == base_export
  assert _files(*committed) == before  # nothing written outside --out
  again = _study("--study=seeds", "--quick", f"--out={out}", cwd=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  rerun = json.loads((out / "study.json").read_text())
  assert all(r["seconds"] == study["arms"][a][s]["seconds"]
             for a, by_seed in rerun["arms"].items() for s, r in by_seed.items())
  assert rerun["claims"] == study["claims"]


@pytest.mark.parametrize("args, message", [
    (["--study=seed"], "--study='seed' is not one of ['seeds', 'partial_base']"),
    (["--study=partial_base", "--docs"], "--docs writes the committed table of --study=seeds"),
    ([], "--study is required"),
    (["--study=seeds", "--seeds=0,x"], "--seeds='0,x': expected comma-separated integers"),
    (["--study=seeds", "--seeds=1,1"], "expected one or more distinct integers"),
    (["--study=seeds", "--quick", "--docs"], "--docs rewrites the committed results: run "
                                             "without --quick"),
    (["--study=seeds", "--docs"], "results.md does not exist (run from the repository root)"),
])
def test_user_errors(tmp_path, args, message, forked_cli):
  result = forked_cli.run(["-m", "clipjax.study", *args, f"--out={tmp_path / 'o'}"], cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert not (tmp_path / "o").exists()  # nothing written


def test_flatten_and_claims_on_fixed_numbers():
  results = {"retrieval": {"base": {"metrics": {"image_retrieval_recall@1": 0.5}},
                           "blend": {"sweep": [{"beta": 0.9, "image_retrieval_recall@1": 0.6},
                                               {"beta": 0.0, "image_retrieval_recall@1": 0.1}]}},
             "vqa": {"base": {"metrics": {"multiple_choice_accuracy": 0.25,
                                          "multiple_choice_accuracy/count": 0.5}}}}
  assert flatten_results(results) == {
      "base/retrieval/image_retrieval_recall@1": 0.5,
      "blend@0.9/retrieval/image_retrieval_recall@1": 0.6,
      "blend@0.0/retrieval/image_retrieval_recall@1": 0.1,
      "base/vqa/multiple_choice_accuracy": 0.25, "base/vqa/multiple_choice_accuracy/count": 0.5}
  a = [0.30, 0.34, 0.31]
  b = [0.25, 0.33, 0.27]
  records = {"x": {s: {"metrics": {"m": v}} for s, v in enumerate(a)},
             "y": {s: {"metrics": {"m": v, "only_y": 1.0}} for s, v in enumerate(b)}}
  summary = summarize_arms(records)
  expected = stats.summarize(a)
  assert summary["x"]["m"] == pytest.approx(
      {"n": 3, "mean": expected.mean, "sd": expected.sd, "low": expected.low,
       "high": expected.high, "next_low": expected.next_low, "next_high": expected.next_high})
  claim = Claim("c", "x beats y", "seed 001", "1 → 2", "x", "m", "y", "m", "higher", "")
  row, = evaluate_claims(records, [claim])
  diff = stats.paired_difference(a, b)
  assert row["difference"]["mean"] == pytest.approx(0.1 / 3)
  assert row["difference"]["low"] == pytest.approx(diff.low)
  assert row["verdict"] == stats.verdict(diff, "higher") and row["seeds"] == [0, 1, 2]
  assert row["difference"]["next_high"] == pytest.approx(diff.next_high)
  table = claims_table([row])  # the prediction interval has its own column
  assert "next seed's Δ [95 % PI]" in table
  assert f"[{100 * diff.next_low:+.1f}, {100 * diff.next_high:+.1f}] | " in table


def test_premise_section_on_fixed_numbers():
  """The probe table's mean ± sd and the per-type Δ DRAFT − control equal the statistics
  module's on the same numbers; the reading follows the premise claim's verdict; every claim's
  `differs` fills in from a budget."""
  import dataclasses

  from clipjax.study.arms import DEFAULT
  from clipjax.study.claims import PARTIAL_BASE_CLAIMS
  from clipjax.study.report import premise_section

  draft, control = [0.40, 0.46, 0.43], [0.30, 0.31, 0.36]
  alone, blend = "draft/vqa/multiple_choice_accuracy", "blend@0.9/vqa/multiple_choice_accuracy"

  def vqa(v):  # the tower alone 10 pp above its blend, on the count questions
    return {f"{alone}/count": v + 0.1, f"{blend}/count": v, alone: v + 0.1, blend: v}
  arms = {"draft/partial": {s: {"metrics": {**vqa(v),
                                            "base/vqa/multiple_choice_accuracy/count": 0.2}}
                            for s, v in enumerate(draft)},
          "caption_only/partial": {s: {"metrics": vqa(v)} for s, v in enumerate(control)},
          "init": {s: {"metrics": {"clip/linear_probe/count": v}}
                   for s, v in enumerate([0.4, 0.42, 0.41])}}
  claim = next(c for c in CLAIMS if c.id == "dialogue_beats_captions/partial")
  study = {"arms": arms, "summaries": summarize_arms(arms),
           "budget": dataclasses.asdict(DEFAULT)}
  row, = evaluate_claims(arms, [claim])
  text = "\n".join(premise_section(study, [row]))
  diff = stats.paired_difference(draft, control)
  delta = f"+{100 * diff.mean:.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"
  assert (f"| count | 20.0 ± 0.0 | 42.3 ± 3.2 | 53.0 ± 3.0 | {delta} | 32.3 ± 3.2 | "
          f"43.0 ± 3.0 | {delta} |") in text
  assert "| init | 41.0 ± 1.0 |" in text
  assert row["verdict"] == "agrees" and "The premise shows for DRAFT + blend" in text
  row["verdict"] = "inconclusive (interval spans 0)"
  assert "The premise does not show for DRAFT + blend" in "\n".join(
      premise_section(study, [row]))
  for c in CLAIMS + PARTIAL_BASE_CLAIMS:
    assert "{" not in c.differs.format(**dataclasses.asdict(DEFAULT)), c.id


def test_committed_results_are_the_default_study():
  """docs/results.md was generated by the default study as the code defines it today: its
  header names the default seeds and budget, and every claim has its row (a change to the
  budget, the arms' steps or the claims needs `python -m clipjax.study --study=seeds --docs`)."""
  from clipjax.study.arms import DEFAULT

  md = (REPO / "docs" / "results.md").read_text()
  assert (f"(seeds {', '.join(map(str, DEFAULT.seeds))}; {DEFAULT.arch}, {DEFAULT.resolution} "
          f"px, batch {DEFAULT.batch_size}, the base {DEFAULT.base_steps} steps, "
          f"{DEFAULT.scratch_steps} steps from scratch, {DEFAULT.adapt_steps} adaptation "
          f"steps; evaluation on {DEFAULT.eval_size} held-out scenes;") in md
  for claim in CLAIMS:
    assert f"| {claim.text} | {claim.source} |" in md, claim.id


def test_a_run_is_reused_only_while_its_data_is_unchanged(tmp_path):
  """The run directory's key covers what the sources hold, not only the config: rewriting a
  manifest makes a new run (and so would a change to how the synthetic scenes are drawn: the
  key hashes the first and last records of every source, images by their pixels)."""
  manifest = tmp_path / "train.jsonl"
  manifest.write_text('{"image": "a.jpg", "caption": "a cat"}\n{"image": "b.jpg", "caption": "a dog"}\n')
  cfg = arm_config(ARMS[0], QUICK, 0)
  cfg.data.train = dict(kind="manifest", manifest=str(manifest))
  key = config_key(cfg)
  assert config_key(cfg) == key  # deterministic
  manifest.write_text('{"image": "a.jpg", "caption": "a cat"}\n{"image": "b.jpg", "caption": "a fox"}\n')
  assert config_key(cfg) != key
