"""`loss.exchange=ring` through the training loop on a data x fsdp mesh: the loss curve equals
the all-gather run's (with GradCache sub-batches for CLIP)."""
import json

import jax
import numpy as np
import pytest
from method_runs import load_config

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


# The losses' ring paths are checked one by one in tests/losses/test_ring.py (every loss below
# included: the sigmoid pairs, InfoNCE+ with hard negatives, DRAFT's contrastive + MMD); here
# the loop's plumbing, which is one path for every method (the exchange resolved into the
# method's Context), with GradCache on CLIP. The other methods run with `-m slow`.
@pytest.mark.parametrize("method, overrides", [
    ("clip", {"optim.accum_steps": 2}), pytest.param("siglip", {}, marks=pytest.mark.slow),
    pytest.param("multitask", {"data.num_negatives": 1}, marks=pytest.mark.slow),
    pytest.param("draft", {}, marks=pytest.mark.slow)])
def test_ring_training_equals_all_gather(tmp_path, method, overrides):
  ring = _curve(method, "ring", tmp_path / "ring", **overrides)
  gathered = _curve(method, "all_gather", tmp_path / "gathered", **overrides)
  assert len(ring) == 3 and np.isfinite(ring).all()
  np.testing.assert_allclose(ring, gathered, rtol=2e-5)


def test_auto_exchange_rule():
  """loss.exchange=auto (the default): the ring from a 32,768 global batch on, where every
  term of the method's loss has one; all-gather below it and for distillation; an explicit
  choice is kept."""
  from clipjax.methods import method_config
  from clipjax.methods.base import RING_FROM_BATCH, resolve_exchange, run_options

  def exchange(method, batch_size, **overrides):
    cfg = method_config(method)
    cfg.batch_size = batch_size
    for key, value in overrides.items():
      part, field = key.split(".")
      cfg[part][field] = value
    return resolve_exchange(run_options(cfg))

  assert method_config("clip").loss.exchange == "auto"
  assert exchange("clip", RING_FROM_BATCH - 64) == "all_gather"
  assert exchange("clip", RING_FROM_BATCH) == exchange("siglip", 1 << 20) == "ring"
  assert exchange("distill", 1 << 20) == "all_gather"
  assert exchange("draft", 1 << 20) == exchange("multitask", 1 << 20) == "ring"
  assert exchange("multitask", 1 << 20, **{"data.num_negatives": 1}) == "ring"
  assert exchange("clip", 64, **{"loss.exchange": "ring"}) == "ring"
  assert exchange("clip", 1 << 20, **{"loss.exchange": "all_gather"}) == "all_gather"
