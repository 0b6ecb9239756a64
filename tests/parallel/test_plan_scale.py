"""`scripts/plan_scale.py` on a tiny model as a user runs it: measure, fit, held-out check,
report."""
import json
import os
import subprocess
import sys

from conftest import REPO, xla_flags


def test_plan_scale_script_on_a_tiny_model(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))
  out = subprocess.run(
      [sys.executable, str(REPO / "scripts/plan_scale.py"), "--arch=ViT-T-16-test",
       "--methods=clip", "--devices=4,8", "--per_device=4,8", "--loss_per_device=256,1024",
       f"--out={tmp_path / 's.md'}", f"--json={tmp_path / 'p.json'}"], env=env,
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  points = json.loads((tmp_path / "p.json").read_text())
  # per mesh: 2 steps and 2 loss phases, plus a GradCache step on the smallest mesh
  assert sorted((p["kind"], p["devices"], p["per_device"], p["accum"]) for p in points) == [
      ("loss", 4, 256, 1), ("loss", 4, 1024, 1), ("loss", 8, 256, 1), ("loss", 8, 1024, 1),
      ("step", 4, 4, 1), ("step", 4, 8, 1), ("step", 4, 8, 4), ("step", 8, 4, 1),
      ("step", 8, 8, 1)]
  embed_dim = 32
  for p in points:
    # CLIP's bidirectional loss: every device gathers all image and caption embeddings (f32)
    assert p["collectives"]["all-gather"] >= 2 * p["global"] * embed_dim * 4, p
    assert p["memory"] > 0
    if p["kind"] == "step":  # the gradient is all-reduced: at least the trained weights
      assert p["collectives"]["all-reduce"] >= 0.9 * p["weights"] / 3, p
      assert p["memory"] > p["weights"]
  report = (tmp_path / "s.md").read_text()
  assert report.startswith("# Scaling on paper") and "## CLIP" in report
  assert "| 1,048,576 | 1024 | 1024 | 16 |" in report
  assert report in out.stdout
  held = report.split("Held-out points")[1].split("Plan:")[0]
  assert held.count("| step | 8 |") == 2 and held.count("| loss | 8 |") == 2
  assert "| step | 4 | 8 | 4 |" in held
