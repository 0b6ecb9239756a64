"""Mesh construction, global batches, and a real two-process jax.distributed run."""
import os
import subprocess
import sys

import jax
import numpy as np
import portpicker
import pytest
from conftest import REPO

from clipjax.losses import clip_loss
from clipjax.parallel.mesh import batch_sharding, host_batch_to_global, make_mesh


def test_mesh_shapes_and_errors():
  assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1}
  assert dict(make_mesh(fsdp=2).shape) == {"data": 4, "fsdp": 2}
  assert dict(make_mesh(devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1}
  with pytest.raises(ValueError, match="fsdp=3 must be >= 1 and divide the 8 devices"):
    make_mesh(fsdp=3)
  with pytest.raises(ValueError, match="data=3 x fsdp=1 = 3 but there are 8 devices"):
    make_mesh(data=3)


def test_host_batch_becomes_a_sharded_global_array():
  mesh = make_mesh(fsdp=2)
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  g = host_batch_to_global({"x": x}, mesh)["x"]
  assert g.shape == (16, 3) and g.sharding == batch_sharding(mesh)
  assert len(g.addressable_shards) == 8 and g.addressable_shards[0].data.shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(g), x)
  with pytest.raises(ValueError, match="global batch of 12 rows .* does not divide over 8 devices"):
    host_batch_to_global(x[:12], mesh)


@pytest.mark.timeout(300)
def test_two_processes_with_gloo_compute_the_global_loss():
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, str(REPO / "tests/parallel/multihost_worker.py"),
                             str(port), str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    outs.append(out)
  values = [float(line.split()[1]) for o in outs for line in o.splitlines() if line.startswith("LOSS")]
  rng = np.random.default_rng(0)
  image, text = (rng.normal(size=(32, 8)).astype(np.float32) for _ in range(2))
  image /= np.linalg.norm(image, axis=1, keepdims=True)
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  expected = float(clip_loss(image, text, 10.0))
  assert len(values) == 2 and all(abs(v - expected) < 1e-5 for v in values), (values, expected)
