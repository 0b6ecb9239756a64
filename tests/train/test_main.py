"""`python -m clipjax.main` as users run it: preemption (SIGTERM) and resume give bitwise the
parameters of an uninterrupted run; TensorBoard events and the JSONL log are written; a NaN
loss and an unknown config field stop with a clear message."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, xla_flags
from safetensors.numpy import load_file

TINY = ["--config.model.arch=ViT-T-16-test", "--config.data.train.resolution=32",
        "--config.data.train.size=2048", "--config.batch_size=32", "--config.eval.tasks=",
        "--config.export.hf=False", "--config.log_every=1", "--config.checkpoint.every=4"]


def _main(workdir, *extra, config="clip"):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2),
             PYTHONPATH=str(REPO))
  return [sys.executable, "-m", "clipjax.main", f"--config={REPO}/configs/{config}.py",
          f"--workdir={workdir}", *TINY, *extra], env


def _run(workdir, *extra, timeout=600):
  cmd, env = _main(workdir, *extra)
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _logged_steps(workdir):
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(l)["step"] for l in path.read_text().splitlines() if l.strip()]


def test_sigterm_then_resume_is_bitwise_identical(tmp_path):
  steps = "--config.total_steps=14"
  straight = _run(tmp_path / "straight", steps)
  assert straight.returncode == 0, straight.stderr[-3000:]

  cmd, env = _main(tmp_path / "preempted", steps)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and not any(s >= 6 for s in _logged_steps(tmp_path / "preempted")):
    if proc.poll() is not None:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  assert "SIGTERM: saved step" in err
  saved = sorted(int(p.name) for p in (tmp_path / "preempted/checkpoints").iterdir()
                 if p.name.isdigit())
  assert saved and 6 <= saved[-1] < 14, saved

  resumed = _run(tmp_path / "preempted", steps)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout
  a = load_file(str(tmp_path / "straight/export/open_clip_model.safetensors"))
  b = load_file(str(tmp_path / "preempted/export/open_clip_model.safetensors"))
  assert a.keys() == b.keys()
  for k in a:
    assert np.array_equal(a[k], b[k]), k
  # The logged losses of the overlapping steps agree too.
  log = lambda d: {r["step"]: r["loss"] for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}
  straight_log, resumed_log = log(tmp_path / "straight"), log(tmp_path / "preempted")
  assert all(straight_log[s] == resumed_log[s] for s in range(saved[-1] + 1, 15))

  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  events = EventAccumulator(str(tmp_path / "straight/tensorboard"))
  events.Reload()
  losses = events.Scalars("train/loss")
  assert [e.step for e in losses] == list(range(1, 15))
  assert losses[-1].value == pytest.approx(straight_log[14], rel=1e-6)
  # Throughput beside samples/s: model TFLOP/s and MFU against the probed CPU peak.
  assert {"train/mfu", "train/model_tflops"} <= set(events.Tags()["scalars"])
  rows = [json.loads(r) for r in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
  assert all(r["model_tflops"] > 0 and 0 < r["mfu"] < 1 for r in rows), rows


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
  out = _run(tmp_path, "--config.total_steps=12", "--config.optim.lr=1e30",
             "--config.optim.grad_clip_norm=0.0", "--config.optim.warmup_steps=0")
  assert out.returncode != 0
  assert "loss is nan at step" in out.stderr and "last good checkpoint" in out.stderr


def test_unknown_config_field_is_named(tmp_path):
  out = _run(tmp_path, "--config.optim.learning_rate=1e-3", timeout=120)
  assert out.returncode != 0 and "learning_rate" in out.stderr
