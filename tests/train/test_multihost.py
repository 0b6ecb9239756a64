"""Two local processes x 4 CPU devices (jax.distributed, gloo) train with the same loss curve
as one process with 8 devices on the same data: each host reads its stride of the global
shuffle, and the union of the host batches is the single-process global batch (the CLIP loss
does not depend on the order of the pairs)."""
import json
import os
import subprocess
import sys

import portpicker
import pytest
from conftest import REPO

ARGS = ["--config.model.arch=ViT-T-16-test", "--config.data.train.resolution=32",
        "--config.data.train.size=512", "--config.batch_size=16", "--config.total_steps=3",
        "--config.log_every=1", "--config.eval.tasks=", "--config.export.hf=False",
        "--config.data.num_workers=1", "--config.checkpoint.every=0"]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "clipjax.main", f"--config={REPO}/configs/clip.py",
          f"--workdir={workdir}", *ARGS, *extra]


def _env(devices):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")


def _losses(workdir):
  return [json.loads(l)["loss"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
def test_two_hosts_match_one_host(tmp_path):
  single = subprocess.run(_cmd(tmp_path / "one"), env=_env(8), capture_output=True, text=True,
                          timeout=400)
  assert single.returncode == 0, single.stderr[-3000:]
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      _cmd(tmp_path / "two", f"--config.distributed.coordinator_address=localhost:{port}",
           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    results = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
  assert len(one) == len(two) == 3
  assert two == pytest.approx(one, rel=1e-5)
  assert (tmp_path / "two/export/open_clip_model.safetensors").exists()


def _two_hosts(workdir, *extra):
  port = portpicker.pick_unused_port()
  return [subprocess.Popen(
      _cmd(workdir, f"--config.distributed.coordinator_address=localhost:{port}",
           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
           *extra),
      env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=400):
  try:
    return [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()


@pytest.mark.timeout(600)
def test_preemption_of_one_host_saves_on_all_hosts(tmp_path):
  """SIGTERM reaches only process 1: both processes agree on it, save the same step, exit 143
  (no deadlock), and the same command resumes both to the end."""
  import re
  import signal
  import time
  procs = _two_hosts(tmp_path, "--config.total_steps=400")
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.exists() and
                                        len(metrics.read_text().splitlines()) >= 2):
    assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  results = _finish(procs)
  saved = []
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 143, err[-3000:]
    saved += re.findall(r"SIGTERM: saved step (\d+)", err)
  assert len(saved) == 2 and saved[0] == saved[1], saved
  step = int(saved[0])
  assert 2 <= step < 400 and (tmp_path / "checkpoints" / str(step)).is_dir()
  resumed = _two_hosts(tmp_path, "--config.total_steps=" + str(step + 2))
  for p, (out, err) in zip(resumed, _finish(resumed)):
    assert p.returncode == 0, err[-3000:]
    assert f"at step {step}" in out, out[-2000:]
  logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert logged[-1] == step + 2
