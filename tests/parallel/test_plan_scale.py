"""`scripts/plan_scale.py` on a tiny model as a user runs it: measure, fit, held-out check,
report."""
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, xla_flags


# big enough to read in the report's 0.01 GiB steps (compiled only, never run)
EXCHANGE_ARGS = ["--exchange_devices=2,8", "--exchange_batches=65536,262144",
                 "--exchange_dim=768", "--exchange_block=1024"]


def test_plan_scale_script_on_a_tiny_model(tmp_path):
  """The whole report, written over an earlier one whose other architecture's largest-batch
  section stays."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))
  (tmp_path / "s.md").write_text("# Scaling on paper\n\nstale\n\n## Largest global batch per "
                                 "chip: ViT-L-14\n\nother arch\n")
  out = subprocess.run(
      [sys.executable, str(REPO / "scripts/plan_scale.py"), "--arch=ViT-T-16-test",
       "--methods=clip", "--devices=4,8", "--per_device=4,8", "--loss_per_device=256,1024",
       *EXCHANGE_ARGS, f"--out={tmp_path / 's.md'}", f"--json={tmp_path / 'p.json'}"], env=env,
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  points = json.loads((tmp_path / "p.json").read_text())
  # per mesh: 2 steps and 2 loss phases under each exchange, plus a GradCache step on the
  # smallest mesh
  assert sorted((p["kind"], p["exchange"], p["devices"], p["per_device"], p["accum"])
                for p in points) == [
      ("loss", "all_gather", 4, 256, 1), ("loss", "all_gather", 4, 1024, 1),
      ("loss", "all_gather", 8, 256, 1), ("loss", "all_gather", 8, 1024, 1),
      ("loss", "ring", 4, 256, 1), ("loss", "ring", 4, 1024, 1),
      ("loss", "ring", 8, 256, 1), ("loss", "ring", 8, 1024, 1),
      ("step", "all_gather", 4, 4, 1), ("step", "all_gather", 4, 8, 1),
      ("step", "all_gather", 4, 8, 4), ("step", "all_gather", 8, 4, 1),
      ("step", "all_gather", 8, 8, 1)]
  embed_dim = 32
  for p in points:
    # CLIP's bidirectional loss: every device gathers all image and caption embeddings (f32),
    # or sends them round the ring (collective-permutes, no gather)
    if p["exchange"] == "all_gather":
      assert p["collectives"]["all-gather"] >= 2 * p["global"] * embed_dim * 4, p
    else:
      assert p["collectives"].get("all-gather", 0) < p["global"] * embed_dim * 4, p
      assert p["collectives"]["collective-permute"] >= 2 * p["per_device"] * embed_dim * 4, p
    assert p["memory"] > 0
    if p["kind"] == "step":  # the gradient is all-reduced: at least the trained weights
      assert p["collectives"]["all-reduce"] >= 0.9 * p["weights"] / 3, p
      assert p["memory"] > p["weights"]
  report = (tmp_path / "s.md").read_text()
  assert report.startswith("# Scaling on paper") and "## CLIP" in report
  assert "other arch" in report and "stale" not in report
  assert "| 1,048,576 | 1024 | 1024 | 16 |" in report
  assert report in out.stdout
  held = report.split("Held-out points")[1].split("Plan:")[0]
  assert held.count("| step | 8 |") == 2 and held.count("| loss | 8 |") == 2
  assert "| step | 4 | 8 | 4 |" in held
  assert "## Loss memory by exchange" in report
  largest = _largest_rows(report, "ViT-T-16-test")
  # on 1,024 chips the ring's limit (the device's rows) passes the all-gather's (the global
  # batch) on every chip size
  for gathered, ring in zip(largest[("clip", "all_gather", 1024)], largest[("clip", "ring", 1024)]):
    assert ring > gathered


def _largest_rows(report: str, arch: str) -> dict:
  """{(method, exchange, chips): [largest global batch per chip size]} of an arch's section."""
  rows = {}
  for line in report.split(f"## Largest global batch per chip: {arch}\n")[1].split(
      "\n## ")[0].splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if line.startswith("| ") and cells[2].replace(",", "").isdigit():
      rows[(cells[0], cells[1], int(cells[2].replace(",", "")))] = [
          int(c.split()[0].replace(",", "")) if c != "none" else 0 for c in cells[3:]]
  return rows


def _exchange_rows(report: str) -> dict:
  """{(loss, batch, devices): (all_gather GiB, ring GiB)} of the exchange section."""
  rows, loss = {}, None
  for line in report.split("## Loss memory by exchange")[1].splitlines():
    if line.startswith("**"):
      loss = line.strip("*")
    elif line.startswith("| ") and line[2].isdigit():
      batch, devices, gathered, ring, _ = (c.strip() for c in line.strip("|").split("|"))
      rows[(loss, int(batch.replace(",", "")), int(devices))] = (float(gathered), float(ring))
  return rows


def test_exchange_section_alone_replaces_only_itself(tmp_path):
  """`--exchanges` measures the loss memory by exchange and rewrites that section of an
  existing report, leaving the rest: the ring's memory follows the device's rows (flat when
  the global batch grows with the mesh), the all-gather's the global batch."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))
  out_md = tmp_path / "scaling.md"
  out_md.write_text("# Scaling on paper\n\n## CLIP\n\nkept\n\n## Loss memory by exchange\n\n"
                    "stale\n")
  out = subprocess.run([sys.executable, str(REPO / "scripts/plan_scale.py"), "--exchanges",
                        *EXCHANGE_ARGS, f"--out={out_md}"], env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = out_md.read_text()
  assert "kept" in report and "stale" not in report
  rows = _exchange_rows(report)
  assert len(rows) == 3 * 2 * 2  # clip, siglip and draft, two batches, two meshes
  for loss in ("clip", "siglip", "draft"):
    gathered_small, ring_small = rows[(loss, 65536, 2)]
    gathered_big, ring_big = rows[(loss, 262144, 8)]  # 4x the global batch, same rows per device
    assert ring_big < gathered_big
    assert gathered_big > 2 * gathered_small  # the gathered side grew 4x (own rows did not)
    assert ring_big <= 1.2 * ring_small  # the device's rows did not grow


@pytest.mark.slow  # its parts run in the two tests above: the measurement and the section
def test_largest_section_alone_replaces_only_its_architecture(tmp_path):  # (_write_section)
  """`--largest --arch=A` measures A and rewrites A's largest-batch section of an existing
  report, leaving the rest (another architecture's section included)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))
  out_md = tmp_path / "scaling.md"
  out_md.write_text("# Scaling on paper\n\nkept\n\n## Largest global batch per chip: "
                    "ViT-T-16-test\n\nstale\n\n## Largest global batch per chip: ViT-L-14\n\n"
                    "other arch\n")
  out = subprocess.run([sys.executable, str(REPO / "scripts/plan_scale.py"), "--largest",
                        "--arch=ViT-T-16-test", "--methods=clip", "--devices=2,4",
                        "--per_device=2,4", "--loss_per_device=64,256", f"--out={out_md}"],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = out_md.read_text()
  assert "kept" in report and "other arch" in report and "stale" not in report
  rows = _largest_rows(report, "ViT-T-16-test")
  assert sorted(rows) == [("clip", exchange, chips) for exchange in ("all_gather", "ring")
                          for chips in (64, 1024)]
  assert rows[("clip", "ring", 1024)][0] > rows[("clip", "all_gather", 1024)][0]
