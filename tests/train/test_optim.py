"""Optimizer pieces against open_clip's trainer: weight-decay exclusions, the cosine schedule;
freezing keeps leaves bitwise and costs no optimizer state."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_openclip_model

import clipjax
from clipjax.models.lora import init_lora
from clipjax.models.naming import torch_key
from clipjax.options import OptimOptions
from clipjax.train.optim import cosine_schedule, decay_mask, frozen_mask, make_optimizer


def test_decay_mask_equals_open_clip_trainer():
  # open_clip_train/main.py: exclude = p.ndim < 2 or "bn"/"ln"/"bias"/"logit_scale" in the name
  torch_model = make_openclip_model("ViT-T-16-test")
  exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
  ref = {n: not exclude(n, p) for n, p in torch_model.named_parameters()}
  _, params = clipjax.create_model("ViT-T-16-test")
  ours = {}
  for path, decays in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]:
    ours[torch_key(tuple(k.key for k in path))[0]] = decays
  assert ours == ref
  assert ref["token_embedding.weight"] and ref["positional_embedding"]  # embeddings decay
  assert not ref["visual.class_embedding"] and not ref["ln_final.weight"]


def test_cosine_schedule_equals_open_clip():
  from open_clip_train.scheduler import cosine_lr

  class _Opt:
    param_groups = [{"lr": 0.0}]

  ref_fn = cosine_lr(_Opt(), 1e-3, 10, 100)
  ours = cosine_schedule(1e-3, 10, 100)
  for step in range(100):
    ref = ref_fn(step)
    # float32 schedule: within 1e-6 of the base lr (absolute), 1e-6 relative
    assert float(ours(step)) == pytest.approx(ref, rel=1e-6, abs=1e-9), step


def test_frozen_leaves_bitwise_and_stateless():
  _, clip = clipjax.create_model("ViT-T-16-test")
  params = {"clip": clip}
  opts = OptimOptions(lr=1e-2, warmup_steps=0, grad_clip_norm=0.0)
  tx, frozen = make_optimizer(params, opts, 10, ("^clip/visual/",))
  state = tx.init(params)
  n_train = sum(x.size for x, f in zip(jax.tree.leaves(params), jax.tree.leaves(frozen)) if not f)
  adam_sizes = sum(x.size for x in jax.tree.leaves(state) if x.dtype == jnp.float32)
  assert adam_sizes == 2 * n_train  # mu and nu for trainable leaves only
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  for (p, old), new_leaf, f in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                   jax.tree.leaves(new), jax.tree.leaves(frozen)):
    if f:
      assert np.array_equal(np.asarray(old), np.asarray(new_leaf)), p
  assert not np.array_equal(new["clip"]["text_projection"], params["clip"]["text_projection"])


def test_freeze_pattern_errors():
  _, clip = clipjax.create_model("ViT-T-16-test")
  with pytest.raises(ValueError, match="matches no parameter"):
    frozen_mask({"clip": clip}, ["^clip/visaul/"])
  with pytest.raises(ValueError, match="nothing to train"):
    make_optimizer({"clip": clip}, OptimOptions(), 1, ("^clip/",))


@pytest.mark.parametrize("name", ["adamw", "lion", "adafactor", "muon", "sgd"])
def test_optimizers_by_name_are_optax_with_our_schedule_decay_and_freezing(name):
  """optim.name: the updates equal the optax optimizer called directly with the same schedule,
  hyperparameters and open_clip decay mask (exact: the same float32 ops); with a freeze rule
  the frozen leaves stay bitwise and the others move."""
  _, clip = clipjax.create_model("ViT-T-16-test")
  params = {"clip": jax.tree.map(np.asarray, clip)}
  grads = jax.tree.map(lambda x: np.random.default_rng(x.size).normal(size=x.shape).astype(
      np.float32), params)
  kw = dict(b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2)
  schedule = cosine_schedule(1e-3, 2, 10)
  reference = {
      "adamw": optax.adamw(schedule, mask=decay_mask, **kw),
      "lion": optax.lion(schedule, b1=0.9, b2=0.98, weight_decay=0.2, mask=decay_mask),
      "adafactor": optax.adafactor(schedule, weight_decay_rate=0.2, weight_decay_mask=decay_mask),
      "muon": optax.contrib.muon(schedule, beta=0.9, weight_decay=0.2,
                                 weight_decay_mask=decay_mask, adam_b1=0.9, adam_b2=0.98,
                                 eps=1e-6, adam_weight_decay=0.2),
      "sgd": optax.chain(optax.add_decayed_weights(0.2, decay_mask), optax.sgd(schedule, 0.9)),
  }[name]
  opts = OptimOptions(lr=1e-3, warmup_steps=2, name=name, grad_clip_norm=0.0, **kw)
  tx, _ = make_optimizer(params, opts, 10)
  want = reference.update(grads, reference.init(params), params)[0]
  got = tx.update(grads, tx.init(params), params)[0]
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))

  tx, frozen = make_optimizer(params, opts, 10, ("^clip/visual/",))
  new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
  for old, leaf, f in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(frozen)):
    assert np.array_equal(old, np.asarray(leaf)) == bool(f)

  # with LoRA adapters (stacked [S, in, r] / [S, r, out] leaves) and the CLIP weights frozen,
  # as the training loop sets it up: only the adapters move, every one of them
  params["lora"] = init_lora(params, rank=2)
  grads["lora"] = jax.tree.map(lambda x: np.ones(x.shape, np.float32), params["lora"])
  tx, frozen = make_optimizer(params, dataclasses.replace(opts, warmup_steps=0), 10,
                              ("^clip/",))
  new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
  for old, leaf, f in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(frozen)):
    assert np.array_equal(old, np.asarray(leaf)) == bool(f)
  assert not any(jax.tree.leaves(frozen["lora"]))


def test_unknown_optimizer_name():
  _, clip = clipjax.create_model("ViT-T-16-test")
  with pytest.raises(ValueError, match=r"optim.name='lino' is not one of \['adamw', 'lion'"):
    make_optimizer({"clip": clip}, OptimOptions(name="lino"), 1)


@pytest.mark.parametrize("name", ["adafactor", "muon"])
def test_optimizers_train_lora_adapters_on_scanned_blocks(name, tmp_path):
  """Two training steps through the loop with optim.name on LoRA adapters of scanned blocks
  (stacked [L, S, in, r] leaves; muon's matrix rule meets them): finite losses, every adapter's
  B moved off zero, the CLIP weights bitwise."""
  import json

  from clipjax.methods import method_config
  from clipjax.train.loop import train
  c = method_config("clip")
  c.model.arch, c.model.scan_layers = "ViT-T-16-test", True
  c.data.train = dict(kind="synthetic", size=64, resolution=32, seed=0, split="train")
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.log_every = 16, 2, 1
  c.checkpoint.every, c.eval, c.export.hf = 0, None, False
  c.optim.name, c.optim.lr, c.optim.warmup_steps = name, 1e-2, 0
  c.lora.rank = 2
  result = train(c, str(tmp_path), devices=jax.devices()[:1])
  _, base = clipjax.create_model("ViT-T-16-test", seed=c.seed, scan_layers=True)
  for got, want in zip(jax.tree.leaves(result["params"]["clip"]), jax.tree.leaves(base)):
    np.testing.assert_array_equal(got, np.asarray(want))
  assert all(np.abs(v["b"]).max() > 0 for v in result["params"]["lora"].values())
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
  assert len(logged) == 2 and all(np.isfinite(r["loss"]) for r in logged)
