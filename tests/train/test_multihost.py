"""Two local processes x 1 CPU device (jax.distributed, gloo), one run serving both tests:
it trains with the same loss curve as one process with 2 devices on the same data (each host
reads its stride of the global shuffle, and the union of the host batches is the
single-process global batch; the CLIP loss does not depend on the order of the pairs), and a
SIGTERM that reaches only one host is agreed on by both, which save the same step, exit 143
and resume with the same command.

One device per process: XLA's CPU gloo collectives with several local devices per process sit
idle ~12 s in every training step on a 2-core machine (measured: 2 or 4 devices per process,
12-14 s per step; 1 device, ~1 s; the step's one tuple all-reduce is where both processes
wait), which made this module the slowest of the suite. Several local devices per host are
covered by tests/parallel/test_mesh.py (2 processes x 4 devices: the global loss and
`host_batch_to_global`)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import portpicker
import pytest
from conftest import REPO, xla_flags

ARGS = ["--config.model.arch=ViT-T-16-test", "--config.data.train.resolution=32",
        "--config.data.train.size=512", "--config.batch_size=16",
        "--config.log_every=1", "--config.eval.tasks=", "--config.export.hf=False",
        "--config.data.num_workers=1", "--config.checkpoint.every=0"]
COMPARED = 3  # steps compared with the single-process run (inside the warmup, so the
              # learning rate does not depend on total_steps)


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "clipjax.main", f"--config={REPO}/configs/clip.py",
          f"--workdir={workdir}", *ARGS, *extra]


def _env(devices):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
              XLA_FLAGS=xla_flags(devices),
              JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")


def _metrics(workdir):
  path = workdir / "metrics.jsonl"
  return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def _two_hosts(workdir, *extra):
  port = portpicker.pick_unused_port()
  return [subprocess.Popen(
      _cmd(workdir, f"--config.distributed.coordinator_address=localhost:{port}",
           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
           *extra),
      env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=400):
  try:
    return [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
  """Two hosts started for 400 steps; SIGTERM to process 1 once COMPARED steps are logged;
  then the same command resumed to two steps past the saved one."""
  workdir = tmp_path_factory.mktemp("two_hosts")
  procs = _two_hosts(workdir, "--config.total_steps=400")
  deadline = time.time() + 300
  while time.time() < deadline and len(_metrics(workdir)) < COMPARED:
    assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)
  results = _finish(procs)
  preempted = [(p.returncode, out, err) for p, (out, err) in zip(procs, results)]
  saved = [s for _, _, err in preempted for s in re.findall(r"SIGTERM: saved step (\d+)", err)]
  resumed = None
  if len(saved) == 2 and saved[0] == saved[1]:
    procs = _two_hosts(workdir, f"--config.total_steps={int(saved[0]) + 2}")
    results = _finish(procs)
    resumed = [(p.returncode, out, err) for p, (out, err) in zip(procs, results)]
  return {"workdir": workdir, "preempted": preempted, "saved": saved, "resumed": resumed}


@pytest.mark.timeout(800)
def test_preemption_of_one_host_saves_on_all_hosts(two_hosts):
  for code, _, err in two_hosts["preempted"]:
    assert code == 143, err[-3000:]
  saved = two_hosts["saved"]
  assert len(saved) == 2 and saved[0] == saved[1], saved
  step = int(saved[0])
  assert COMPARED <= step < 400 and (two_hosts["workdir"] / "checkpoints" / str(step)).is_dir()
  for code, out, err in two_hosts["resumed"]:
    assert code == 0, err[-3000:]
    assert f"at step {step}" in out, out[-2000:]
  assert _metrics(two_hosts["workdir"])[-1]["step"] == step + 2
  assert (two_hosts["workdir"] / "export/open_clip_model.safetensors").exists()


@pytest.mark.timeout(800)
def test_two_hosts_match_one_host(two_hosts, tmp_path):
  single = subprocess.run(_cmd(tmp_path / "one", f"--config.total_steps={COMPARED}"),
                          env=_env(2), capture_output=True, text=True, timeout=400)
  assert single.returncode == 0, single.stderr[-3000:]
  one = [r["loss"] for r in _metrics(tmp_path / "one")]
  two = [r["loss"] for r in _metrics(two_hosts["workdir"])[:COMPARED]]
  assert [r["step"] for r in _metrics(two_hosts["workdir"])[:COMPARED]] == [1, 2, 3]
  assert len(one) == COMPARED and two == pytest.approx(one, rel=1e-5)
