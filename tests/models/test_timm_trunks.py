"""The timm trunks of EVA-CLIP, the Perception Encoder and timm's CLIP ViTs: each registry
architecture at 2 blocks (published widths) against open_clip's own model built through its
TimmModel, the export loading back strictly; the trunk table against timm's models on the
meta device; the rotary tables against timm's; the JSON options clipjax refuses."""
import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import open_clip
import pytest
import torch
from conftest import make_openclip_model, rel_err, torch_state_dict

from clipjax.convert.io import CheckpointError
from clipjax.convert.openclip import params_to_state_dict, state_dict_to_params
from clipjax.errors import ConfigError
from clipjax.models import CLIP, get_model_config
from clipjax.models.registry import MODEL_CONFIGS, config_from_openclip_json
from clipjax.models.rope import rope_tables
from clipjax.models.timm_trunks import TIMM_TRUNKS, timm_trunk

# Observed 0.5e-6 .. 5e-6 at 2 blocks (EVA02-L at 577 tokens the largest): float32 rounding of
# different matmul kernels, grown by the sharpened attention below. A wrong rotary reference
# grid moves the output by ~1, a transposed rotary grid by 3e-3, a missing grid offset by 5e-5
# (the exact tables are checked on their own in test_rope_tables_are_timms).
TOL = 2e-5
# Random weights give near-uniform attention, where positions hardly matter: the trunk's query
# and key projections are doubled so that the rotary embedding is exercised.
QK_SCALE = 2.0

# One architecture per trunk option set: separate q/k/v + SwiGLU + sub-LN + RoPE (EVA02-B;
# EVA02-L at 336 px rescales RoPE from its 16 x 16 reference to 24 x 24), EVA01's q/v biases,
# EVA02-E's post-norm, PE's pre-norm + xy RoPE + 8-head MAP head (T: 3 heads; bigG: no class
# token, no grid offset), timm's CLIP ViT-L with a bidirectional text tower, the average-pooled
# ViT-M with layer scale and open_clip's linear head, MobileCLIP-B's conv-BN stem (BatchNorm
# statistics perturbed) with patch-only positions, the ViT-M with a relative-position MLP bias.
FAMILIES = ["EVA02-B-16", "EVA02-L-14-336", "EVA01-g-14", "EVA02-E-14", "PE-Core-T-16-384",
            "PE-Core-bigG-14-448", "MobileCLIP2-L-14", "vit_medium_patch16_gap_256",
            "MobileCLIP-B", "vit_relpos_medium_patch16_cls_224"]


def _reduced(arch):
  return get_model_config(arch).replace(vision={"layers": 2}, text={"layers": 2})


def _encode(cfg, params, images, ids):
  model = CLIP(cfg)
  img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))(
      params, jnp.asarray(images.transpose(0, 2, 3, 1)))
  txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))(
      params, jnp.asarray(ids, jnp.int32))
  return np.asarray(img), np.asarray(txt)


@pytest.mark.parametrize("arch", FAMILIES)
def test_reduced_depth_tower_matches_open_clip_and_exports_strictly(arch):
  cfg = _reduced(arch)
  ref = make_openclip_model(cfg)
  with torch.no_grad():
    for name, value in ref.named_parameters():
      if re.search(r"trunk\.blocks\.\d+\.attn\.(qkv|q_proj|k_proj)\.weight", name):
        value.mul_(QK_SCALE)
  params = state_dict_to_params(torch_state_dict(ref), cfg)
  size = cfg.vision.image_size
  images = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
  ids = np.random.default_rng(1).integers(1, 49000, (3, cfg.text.context_length))
  ids[:2, 9] = 49407  # end of text
  ids[:2, 10:] = 0
  with torch.no_grad():
    ref_img = ref.encode_image(torch.from_numpy(images)).numpy()
    ref_txt = ref.encode_text(torch.from_numpy(ids)).numpy()
  img, txt = _encode(cfg, params, images, ids)
  assert img.shape == (2, cfg.embed_dim)
  assert rel_err(img, ref_img) < TOL
  assert rel_err(txt, ref_txt) < TOL
  twin = make_openclip_model(cfg, seed=1)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in params_to_state_dict(params).items()},
                       strict=True)
  for key, value in ref.state_dict().items():
    torch.testing.assert_close(twin.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(TIMM_TRUNKS))
def test_trunk_table_matches_timm(name):
  """Sizes and every option of each trunk entry, read from timm's own model (the meta device:
  no memory) built as open_clip builds it, with the pooling open_clip's JSONs ask for."""
  import timm
  pools = {c.vision.pool for c in MODEL_CONFIGS.values()
           if getattr(c.vision, "timm_model_name", "") == name}
  assert len(pools) == 1
  ours = dataclasses.replace(timm_trunk(name), pool=pools.pop())
  with torch.device("meta"):
    trunk = timm.create_model(name, global_pool=ours.pool, num_classes=0)
  block, attn = trunk.blocks[0], trunk.blocks[0].attn
  mlp_hidden = (block.mlp.fc1_g if ours.swiglu else block.mlp.fc1).out_features
  assert (ours.width, ours.layers, attn.num_heads, ours.mlp_width) == (
      trunk.embed_dim, len(trunk.blocks), ours.heads, mlp_hidden)
  assert ours.image_size == trunk.patch_embed.img_size[0]
  assert tuple(trunk.patch_embed.grid_size) == (ours.grid,) * 2
  hybrid = type(trunk.patch_embed).__name__ == "HybridEmbed"
  assert hybrid == (ours.stem == "mci")
  if hybrid:  # MobileCLIP-B's ConvStem: two conv-BN-GELU of width / 4, a biased conv to width
    convs = [m.conv for m in trunk.patch_embed.backbone]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.bias is not None) for c in convs] \
        == [(ours.width // 4, 4, 4, False), (ours.width // 4, 2, 2, False), (ours.width, 2, 2, True)]
  else:
    assert trunk.patch_embed.patch_size[0] == ours.patch_size
    assert (trunk.patch_embed.proj.bias is None) == ours.norm_pre
  assert ours.class_token == (trunk.cls_token is not None)
  pos = getattr(trunk, "pos_embed", None)
  assert (None if pos is None else pos.shape[1]) == {
      "all": ours.grid ** 2 + ours.prefix_tokens, "patches": ours.grid ** 2, "none": None}[
          ours.pos_embed]
  assert isinstance(getattr(trunk, "norm_pre", None), torch.nn.LayerNorm) == ours.norm_pre
  rel_pos = getattr(attn, "rel_pos", None)
  assert (rel_pos.mlp.fc1.out_features if rel_pos is not None else None) == ours.rel_pos_mlp
  if rel_pos is not None:
    assert rel_pos.mode == "cr" and rel_pos.prefix_tokens == ours.prefix_tokens
  assert isinstance(trunk.fc_norm, torch.nn.LayerNorm) == ours.uses_fc_norm
  assert isinstance(trunk.norm, torch.nn.LayerNorm) != ours.uses_fc_norm
  assert block.norm1.eps == (trunk.fc_norm if ours.uses_fc_norm else trunk.norm).eps == ours.ln_eps
  layout = ("split" if getattr(attn, "q_proj", None) is not None
            else "eva" if getattr(attn, "q_bias", None) is not None else "fused")
  assert layout == ours.qkv
  if ours.qkv != "split":
    assert (attn.qkv.bias is not None) == (ours.qkv_bias and ours.qkv == "fused")
  assert isinstance(getattr(attn, "norm", None), torch.nn.LayerNorm) == ours.sub_ln
  assert isinstance(getattr(block.mlp, "norm", None), torch.nn.LayerNorm) == ours.sub_ln
  assert hasattr(block.mlp, "fc1_g") == ours.swiglu
  assert (type(block).__name__ == "EvaBlockPostNorm") == ours.post_norm
  gamma = getattr(getattr(block, "ls1", None), "gamma", None)
  assert (gamma is not None) == (ours.ls_init_value is not None)
  rope = getattr(trunk, "rope", None)
  assert (rope is not None) == (ours.rope_ref_grid is not None)
  if rope is not None:
    assert tuple(rope.ref_feat_shape) == (ours.rope_ref_grid,) * 2
    assert rope.grid_offset == ours.rope_offset
    assert rope.grid_indexing == ("xy" if ours.rope_xy else "ij")
    assert not rope.rotate_half and not rope.in_pixels
  if ours.pool == "map":
    pool = trunk.attn_pool
    assert pool.num_heads == (ours.map_heads or ours.heads)
    assert pool.mlp.fc1.out_features == int(ours.width * (ours.map_mlp_ratio or ours.mlp_ratio))
    assert pool.norm.eps == ours.ln_eps
  act = (block.mlp.act if not ours.swiglu else None)
  if act is not None:
    assert isinstance(act, torch.nn.GELU) and act.approximate == "none"


@pytest.mark.parametrize("grid, ref, offset, xy", [(14, 16, 0.0, False), (24, 16, 0.0, False),
                                                   (24, 24, 1.0, True), (32, 32, 0.0, True)])
def test_rope_tables_are_timms(grid, ref, offset, xy):
  """The rotary tables of EVA02 (ij, rescaled to a 16 x 16 reference) and PE (xy, offset 1)
  against timm's RotaryEmbeddingCat, to float32 rounding of sin / cos."""
  from timm.layers.pos_embed_sincos import RotaryEmbeddingCat
  head_dim = 64
  theirs = RotaryEmbeddingCat(head_dim, in_pixels=False, feat_shape=[grid, grid],
                              ref_feat_shape=[ref, ref], grid_offset=offset,
                              grid_indexing="xy" if xy else "ij").get_embed().numpy()
  sin, cos = rope_tables(grid, head_dim, ref, offset, xy)
  np.testing.assert_allclose(np.concatenate([sin, cos], -1), theirs, rtol=0, atol=2e-6)


def test_relative_position_bias_is_timms():
  """The log-coordinate MLP bias (timm RelPosMlp, 'cr' mode) of a 14 x 14 grid with a class
  token, from the same MLP weights: every (head, query, key) entry, the class token's row and
  column zero."""
  from timm.layers.pos_embed_rel import RelPosMlp as TimmRelPosMlp

  from clipjax.models.timm_blocks import RelPosMlp
  torch.manual_seed(0)
  theirs = TimmRelPosMlp(window_size=(14, 14), num_heads=8, hidden_dim=256,
                         prefix_tokens=1).eval()  # (its MLP has dropout)
  with torch.no_grad():
    for p in theirs.parameters():
      p.normal_()
  sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
  params = {"mlp": {f"fc{i}": {"kernel": sd[f"mlp.fc{i}.weight"].T, "bias": sd[f"mlp.fc{i}.bias"]}
                    for i in (1, 2)}}
  ours = np.asarray(RelPosMlp(14, 8, 256, 1).apply({"params": params}))
  want = theirs.get_bias().detach().numpy()
  assert ours.shape == want.shape == (1, 8, 197, 197)
  np.testing.assert_allclose(ours, want, rtol=0, atol=1e-5 * np.abs(want).max())
  assert not ours[:, :, 0].any() and not ours[:, :, :, 0].any()


def test_patch_dropout_on_a_rotary_trunk():
  """Patch dropout on EVA02: the kept patches' rotary rows are gathered as timm gathers them
  (`apply_keep_indices_nlc`, patch-relative indices), and the trunk runs on the kept tokens."""
  from timm.layers.pos_embed_sincos import apply_keep_indices_nlc

  from clipjax.models.layers import kept_patches
  table = np.concatenate(rope_tables(14, 64, 16), axis=-1)
  chosen = np.asarray(kept_patches(2, 196, 0.5, jax.random.key(3)))
  assert chosen.shape == (2, 98) and chosen.max() < 196
  theirs = apply_keep_indices_nlc(torch.zeros(2, 99, 768), torch.from_numpy(table),
                                  torch.from_numpy(chosen).long()).numpy()
  np.testing.assert_array_equal(table[chosen], theirs)
  cfg = _reduced("EVA02-B-16")
  model = CLIP(cfg, patch_dropout=0.5)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 224, 224, 3)), jnp.float32)
  params = model.init(jax.random.key(0), images, jnp.zeros((1, 77), jnp.int32))["params"]
  plain = model.apply({"params": params}, images, method=model.encode_image)
  dropped = model.apply({"params": params}, images, method=model.encode_image,
                        rngs={"patch_dropout": jax.random.key(1)})
  assert np.isfinite(np.asarray(dropped)).all() and not np.allclose(plain, dropped)


def test_giant_trunks_and_json_options():
  """Every open_clip architecture on a timm trunk we list parses from open_clip's JSON to our
  registry entry; unknown trunks, ImageNet-pretrained trunks and a wrong size are refused by
  name."""
  for arch in MODEL_CONFIGS:
    cfg = MODEL_CONFIGS[arch]
    if hasattr(cfg.vision, "timm_model_name") and arch in open_clip.list_models():
      assert config_from_openclip_json(open_clip.get_model_config(arch)) == cfg, arch
  spec = open_clip.get_model_config("swin_base_patch4_window7_224")
  with pytest.raises(ValueError, match="timm model 'swin_base_patch4_window7_224' is not a "
                                       "trunk clipjax knows; known: .*eva02_base_patch16_clip_224"):
    config_from_openclip_json(spec)
  spec = json.loads(json.dumps(open_clip.get_model_config("EVA02-B-16")))
  spec["vision_cfg"]["timm_model_pretrained"] = True
  with pytest.raises(ValueError, match="timm_model_pretrained=true"):
    config_from_openclip_json(spec)
  spec["vision_cfg"].update(timm_model_pretrained=False, image_size=336)
  with pytest.raises(ValueError, match="image_size 336 differs from timm's 224"):
    config_from_openclip_json(spec)


def test_hf_export_is_refused_by_name(tmp_path):
  from clipjax.convert.hf import export_hf
  cfg = _reduced("EVA02-B-16")
  params = CLIP(cfg).init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                          jnp.zeros((1, 77), jnp.int32))["params"]
  with pytest.raises(CheckpointError, match="no model class for the timm trunk "
                                            "eva02_base_patch16_clip_224.*export_openclip"):
    export_hf(params, cfg, tmp_path / "hf")
  assert not (tmp_path / "hf").exists()
  with pytest.raises(ConfigError):
    get_model_config("EVA02-B-61")


@pytest.mark.parametrize("arch, kernels", [
    ("EVA02-B-16", {"q_proj", "k_proj", "v_proj", "proj", "fc1_g", "fc1_x", "fc2"}),
    ("PE-Core-T-16-384", {"qkv", "proj", "fc1", "fc2"}),
    ("EVA01-g-14", {"qkv", "proj", "fc1", "fc2"}),
    ("vit_relpos_medium_patch16_cls_224", {"qkv", "proj", "fc1", "fc2"})])
def test_default_lora_targets_cover_every_block_projection(arch, kernels):
  from clipjax.convert.openclip import param_shapes
  from clipjax.models.lora import lora_targets
  chosen = lora_targets(param_shapes(_reduced(arch)))
  assert not any("rel_pos" in p for p in chosen)  # not the bias table's own MLP
  for block in ("blocks_0", "blocks_1"):
    assert {p.split("/")[-2] for p in chosen if f"/trunk/{block}/" in p} == kernels
  assert not any(p.endswith("trunk/head/kernel") for p in chosen)  # the projection stays as is
