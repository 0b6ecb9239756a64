"""`loss.exchange=ring` through the training loop on a data x fsdp mesh: the loss curve equals
the all-gather run's (with GradCache sub-batches for CLIP)."""
import json

import jax
import numpy as np
import pytest
from test_methods import load_config

from clipjax.train.loop import train


def _curve(method, exchange, workdir, **overrides):
  cfg = load_config(method, **{"total_steps": 3, "log_every": 1, "batch_size": 16,
                               "loss.exchange": exchange, **overrides})
  cfg.mesh.data, cfg.mesh.fsdp = 2, 2
  cfg.mesh.fsdp_min_size = 0
  if method == "multitask":
    cfg.data.text_batch_size = 16
  train(cfg, str(workdir), devices=jax.devices()[:4])
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text()
          .splitlines()]


# The losses' ring paths are checked one by one in tests/losses/test_ring.py; here the methods
# that reach them through the loop's plumbing: softmax (with GradCache), sigmoid, two streams.
@pytest.mark.parametrize("method, overrides", [
    ("clip", {"optim.accum_steps": 2}), ("siglip", {}), ("multitask", {})])
def test_ring_training_equals_all_gather(tmp_path, method, overrides):
  ring = _curve(method, "ring", tmp_path / "ring", **overrides)
  gathered = _curve(method, "all_gather", tmp_path / "gathered", **overrides)
  assert len(ring) == 3 and np.isfinite(ring).all()
  np.testing.assert_allclose(ring, gathered, rtol=2e-5)
