"""`scripts/bench_device.py --small` as a user runs it: every section measured on this CPU as 4
devices (open_clip on the same device), the JSON and the markdown table written."""
import json
import os
import subprocess
import sys

from conftest import REPO, xla_flags


def test_bench_device_small_runs_every_section(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(4), PYTHONPATH=str(REPO),
             HF_HUB_OFFLINE="1")
  out = subprocess.run([sys.executable, str(REPO / "scripts/bench_device.py"), "--small",
                        f"--out={tmp_path / 'r.json'}", f"--md={tmp_path / 'r.md'}"],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "r.json").read_text())
  device = results["device"]
  assert device["backend"] == "cpu" and device["compute_dtype"] == "float32"
  assert device["attention_kernel"] == "xla" and device["versions"]["jax"]
  encode, = results["encode"]
  assert encode["clipjax_images_per_s"] > 0 and encode["open_clip_texts_per_s"] > 0
  assert encode["open_clip"].startswith("torch ") and "on cpu" in encode["open_clip"]
  step = results["train_step"]
  assert step["batch"] == 32 and step["samples_per_s"] > 0 and 0 < step["mfu"] < 1
  assert "measured float32 matmul" in step["peak"]
  loss = results["tiled_loss"]
  assert loss["global_batch"] == 512 and loss["seconds_per_step"] > 0 and loss["peak_bytes"] > 0
  table = (tmp_path / "r.md").read_text()
  exchanges = {(r["loss"], r["exchange"]): r for r in results["exchanges"]}
  assert sorted(exchanges) == [("clip", "all_gather"), ("clip", "ring"), ("draft", "all_gather"),
                               ("draft", "ring")]
  for (name, exchange), r in exchanges.items():
    assert r["global_batch"] == 512 and r["seconds_per_step"] > 0, r  # --small's largest
    if exchange == "ring":  # per device: its own rows, not the gathered batch
      assert r["peak_bytes"] < exchanges[(name, "all_gather")]["peak_bytes"], (r, exchanges)
  assert table.startswith("# bench_device: cpu x 4") and "| tiled DRAFT loss step" in table
  assert "| draft loss, `ring`: largest global batch that runs" in table
  assert table in out.stdout
