"""`scan_layers`: every transformer tower's blocks under one nn.scan. The scanned towers
(open_clip ViT and text, timm SigLIP trunk, RoBERTa and T5 HF towers) give the unrolled towers'
outputs and gradients on the same weights; parameters convert both ways between the stacked
and per-block layouts; loading and export go through open_clip's names; remat policies
change memory, not results."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.convert.io import load_state_dict
from clipjax.convert.load import load_openclip
from clipjax.convert.openclip import export_openclip, param_shapes, params_to_state_dict
from clipjax.models import create_model, get_model_config
from clipjax.models.configs import HFTextConfig
from clipjax.models.layers import REMAT_POLICIES, remat_policy
from clipjax.models.naming import flatten
from clipjax.models.stacking import is_stacked, stack_layers, unstack_layers

# Scanning changes no arithmetic, only the loop: observed max differences 0 .. 2e-6 of values
# of order 1 (XLA fuses the scanned and unrolled blocks differently).
ATOL = 1e-5


def _hf(model_type: str, layers: int) -> HFTextConfig:
  t5 = model_type == "t5"
  return HFTextConfig("tiny-" + model_type, model_type, vocab_size=120, width=64, heads=4,
                      layers=layers, mlp_width=96, pad_token_id=0 if t5 else 1,
                      layer_norm_eps=1e-6 if t5 else 1e-5, context_length=16, head_dim=16,
                      max_positions=40)


def _config(kind: str):
  if kind in ("roberta", "t5", "m2m_100"):  # 3 T5 blocks: block_0 apart, 2 stacked
    return dataclasses.replace(get_model_config("ViT-T-16-test"), embed_dim=32,
                               text=_hf(kind, 3 if kind == "t5" else 2))
  if kind == "eva":  # EVA02's block (q/k/v, SwiGLU, sub-LN, RoPE) at toy sizes
    tiny = get_model_config("ViT-T-16-test")
    trunk = dataclasses.replace(get_model_config("EVA02-B-16").vision, image_size=32, width=64,
                                heads=2, layers=2)
    return dataclasses.replace(tiny, vision=trunk, custom_text=True)
  return get_model_config({"vit": "ViT-T-16-test", "siglip": "ViT-T-16-SigLIP2-test"}[kind])


def _inputs(cfg):
  size = cfg.vision.image_size
  images = jax.random.normal(jax.random.key(1), (3, size, size, 3))
  ids = jax.random.randint(jax.random.key(2), (3, cfg.text.context_length), 2, 100)
  pad = cfg.text.pad_token_id if isinstance(cfg.text, HFTextConfig) else 0
  return images, ids.at[0, -4:].set(pad)  # one row with padding


def _objective(model, images, ids):
  """A scalar of both towers' outputs with distinct weights per entry (a gradient probe)."""
  def f(params):
    img, txt, scale = model.apply({"params": params}, images, ids)
    w_i = jnp.sin(jnp.arange(img.size, dtype=jnp.float32)).reshape(img.shape)
    w_t = jnp.cos(jnp.arange(txt.size, dtype=jnp.float32)).reshape(txt.shape)
    return jnp.sum(img * w_i) + jnp.sum(txt * w_t) + scale
  return f


@pytest.fixture(scope="module", params=["vit", "siglip", "eva", "roberta", "t5", "m2m_100"])
def towers(request):
  cfg = _config(request.param)
  model, params = create_model(cfg)
  scanned, scanned_init = create_model(cfg, scan_layers=True)
  return request.param, cfg, model, params, scanned, scanned_init


def test_stacked_layout_is_open_clips_names_with_a_layer_axis(towers):
  kind, cfg, _, params, _, scanned_init = towers
  stacked = stack_layers(params, scanned_init)
  assert jax.tree.structure(stacked) == jax.tree.structure(scanned_init)
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, scanned_init)
  assert is_stacked(stacked) and not is_stacked(params)
  # one seed, one model: create_model(scan_layers=True) draws the per-block weights, stacked
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(stacked),
                                                  jax.tree.leaves(scanned_init)))
  flat = {"/".join(k): v for k, v in flatten(stacked).items()}
  key, layers = {"vit": ("visual/transformer/resblocks/attn/in_proj/kernel", 2),
                 "siglip": ("visual/trunk/blocks/attn/qkv/kernel", 2),
                 "eva": ("visual/trunk/blocks/mlp/fc1_g/kernel", 2),
                 "roberta": ("text/transformer/encoder/layer/attention/self/query/kernel", 2),
                 "t5": ("text/transformer/block/layer_0/SelfAttention/q/kernel", 2),
                 "m2m_100": ("text/transformer/layers/self_attn/q_proj/kernel", 2)}[kind]
  assert flat[key].shape[0] == layers
  if kind == "t5":  # block 0 keeps the position-bias table, outside the stack
    assert "text/transformer/block_0/layer_0/SelfAttention/relative_attention_bias/embedding" \
        in flat
  back = unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))
  # a per-block tree passes through unstack unchanged
  assert jax.tree.structure(unstack_layers(params)) == jax.tree.structure(params)


def _outputs_and_gradients(model, images, ids):
  """One compiled program: (image and text embeddings, gradient of the probe)."""
  return jax.jit(lambda p: (model.apply({"params": p}, images, ids)[:2],
                            jax.grad(_objective(model, images, ids))(p)))


def test_scanned_outputs_and_gradients_equal_unrolled(towers):
  _, cfg, model, params, scanned, scanned_init = towers
  images, ids = _inputs(cfg)
  out, grads = _outputs_and_gradients(model, images, ids)(params)
  out_scan, grads_scan = _outputs_and_gradients(scanned, images, ids)(scanned_init)
  for a, b in zip(out, out_scan):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=ATOL, rtol=0)
  grads_scan = unstack_layers(grads_scan)
  largest = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(grads))
  for (path, g), g_scan in zip(jax.tree_util.tree_leaves_with_path(grads),
                               jax.tree.leaves(grads_scan)):
    name = jax.tree_util.keystr(path)
    # A key bias adds the same q.b to every logit of a query row, which softmax ignores: its
    # gradient is zero but for rounding, so it is compared at the scale of the whole gradient
    # (each other leaf at its own).
    zero = "['key']['bias']" in name or "['k_bias']" in name
    scale = largest if zero else float(np.abs(np.asarray(g)).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(g_scan) / scale, np.asarray(g) / scale, atol=ATOL,
                               err_msg=name)


@pytest.fixture(scope="module")
def scanned_vit():
  """(scanned ViT model, its params, inputs, the gradient of the probe without remat)."""
  cfg = _config("vit")
  images, ids = _inputs(cfg)
  scanned, params = create_model(cfg, scan_layers=True)
  return scanned, params, (images, ids), jax.jit(jax.grad(_objective(scanned, images, ids)))(
      params)


@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_remat_policies_keep_outputs_and_gradients(scanned_vit, policy):
  scanned, params, (images, ids), g = scanned_vit
  remat = scanned.clone(remat=policy)
  g_remat = jax.jit(jax.grad(_objective(remat, images, ids)))(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_remat)):  # recomputation re-fuses
    scale = float(np.abs(np.asarray(a)).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(b) / scale, np.asarray(a) / scale, atol=ATOL)
  # the remat lands in the program: a remat around each scanned tower's block (2 towers)
  jaxpr = str(jax.make_jaxpr(_objective(remat, images, ids))(params))
  assert jaxpr.count("remat") == 2
  assert "remat" not in str(jax.make_jaxpr(_objective(scanned, images, ids))(params))


def test_remat_setting_errors():
  assert remat_policy(False) is None and remat_policy(True) is not None
  with pytest.raises(ValueError, match=r"model.remat='dots' is not one of \[False, True, "
                                       r"'nothing_saveable'"):
    remat_policy("dots")


def test_load_scanned_and_export_back_to_open_clip_names(tmp_path):
  _, params = create_model("ViT-T-16-test", seed=4)
  path = tmp_path / "w.safetensors"
  export_openclip(params, "ViT-T-16-test", path)
  model, stacked = load_openclip(path, arch="ViT-T-16-test", scan_layers=True)
  assert model.scan_layers and is_stacked(stacked)
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(
      jnp.shape, param_shapes(model.cfg, scan_layers=True))
  out = tmp_path / "back.safetensors"
  export_openclip(stacked, "ViT-T-16-test", out)
  want, got = load_state_dict(path), load_state_dict(out)
  assert sorted(got) == sorted(want)
  assert all(np.array_equal(got[k], want[k]) for k in want)
  assert sorted(params_to_state_dict(stacked)) == sorted(want)
