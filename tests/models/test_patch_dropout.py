"""model.patch_dropout (FLIP, open_clip's PatchDropout) on the CLIP ViT and SigLIP towers:
kept count, class token, a fresh draw per image, evaluation unchanged, finite gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clipjax
from clipjax.methods import get_method, method_config, run_options
from clipjax.models.layers import drop_patches
from clipjax.parallel.mesh import make_mesh


def test_drop_patches_keeps_the_class_token_and_a_subset_of_patches():
  n, t, w = 4, 49, 8
  x = jnp.asarray(np.random.default_rng(0).normal(size=(n, 1 + t, w)), jnp.float32)
  out = np.asarray(drop_patches(x, 0.5, jax.random.key(0), prefix=1))
  assert out.shape == (n, 1 + 24, w)  # max(1, int(49 · 0.5)) = 24, open_clip's count
  np.testing.assert_array_equal(out[:, 0], np.asarray(x[:, 0]))
  rows = []
  for i in range(n):
    patches = np.asarray(x[i, 1:])
    index = [int(np.flatnonzero((patches == r).all(axis=1))[0]) for r in out[i, 1:]]
    assert len(set(index)) == 24  # distinct patches of this image
    rows.append(frozenset(index))
  assert len(set(rows)) == n  # a fresh draw per image
  assert drop_patches(x, 0.99, jax.random.key(0), prefix=0).shape == (n, 1, w)  # at least one


@pytest.mark.parametrize("arch", ["ViT-T-16-test", "ViT-T-16-SigLIP2-test"])
def test_towers_drop_in_training_only_with_finite_gradients(arch):
  model, clip = clipjax.create_model(arch)
  dropping = model.clone(patch_dropout=0.5)
  size = model.cfg.vision.image_size
  images = jnp.asarray(np.random.default_rng(1).normal(size=(4, size, size, 3)), jnp.float32)
  encode = lambda m, rngs=None: jax.jit(lambda p, x: m.apply(
      {"params": p}, x, rngs=rngs, method=m.encode_image))(clip, images)
  # without the rng (evaluation, export) nothing is dropped: the same function exactly
  np.testing.assert_array_equal(np.asarray(encode(dropping)), np.asarray(encode(model)))
  dropped = np.asarray(encode(dropping, {"patch_dropout": jax.random.key(0)}))
  assert np.isfinite(dropped).all() and not np.allclose(dropped, np.asarray(encode(model)))
  # the training objective draws from the step's key: finite gradients, another key another loss
  cfg = method_config("clip" if "SigLIP" not in arch else "siglip")
  objective = get_method(cfg.method).objective(dropping, make_mesh(devices=jax.devices()[:1]),
                                               run_options(cfg))
  batch = {"image": np.random.default_rng(2).integers(0, 255, (4, size, size, 3), np.uint8),
           "caption": np.asarray(clipjax.get_tokenizer(arch)(["a", "b", "c", "d"])),
           "image_id": np.arange(4)}
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda p, k: objective.loss_fn({"clip": p}, batch, k)[0]))
  value, grads = loss_and_grad(clip, jax.random.key(3))
  assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert float(loss_and_grad(clip, jax.random.key(4))[0]) != float(value)


def test_patch_dropout_config_errors():
  from clipjax.errors import ConfigError
  from clipjax.train.validate import validate
  cfg = method_config("clip")
  cfg.model.arch, cfg.model.patch_dropout = "ViT-T-16-test", 0.5
  validate(cfg)
  cfg.optim.accum_steps = 2
  with pytest.raises(ConfigError, match="does not combine with optim.accum_steps > 1"):
    validate(cfg)
  cfg.optim.accum_steps, cfg.model.arch = 1, "RN50"
  with pytest.raises(ConfigError, match="needs a ViT image tower"):
    validate(cfg)
  cfg.model.arch, cfg.model.patch_dropout = "ViT-T-16-test", 1.0
  with pytest.raises(ConfigError, match=r"model.patch_dropout=1.0 must be in \[0, 1\)"):
    validate(cfg)
