"""Optimizer pieces against open_clip's trainer: weight-decay exclusions, the cosine schedule;
freezing keeps leaves bitwise and costs no optimizer state."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_openclip_model

import clipjax
from clipjax.models.naming import torch_key
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
  tx, frozen = make_optimizer(params, lr=1e-2, total_steps=10, freeze=("^clip/visual/",))
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
    make_optimizer({"clip": clip}, lr=1e-3, total_steps=1, freeze=("^clip/",))
