"""The timm trunks open_clip's model configs name (`vision_cfg.timm_model_name`), as
`TimmViTConfig`s, and the parse of a timm tower's `vision_cfg`.

Sizes and options are timm's own for each name (its `timm/models/*.py` model functions, the
defaults of `VisionTransformer` / `Eva` filled in); `tests/models/test_timm_trunks.py` checks
each entry against timm's model built on the meta device.
"""
from __future__ import annotations

import dataclasses
import logging

from clipjax.models.configs import TimmViTConfig

log = logging.getLogger(__name__)

# timm's SigLIP trunks (timm/models/vision_transformer.py `vit_*_siglip_<res>`): patch size,
# width, depth, heads, mlp_ratio, gelu_tanh. The resolution is the name's suffix.
TIMM_SIGLIP_TRUNKS: dict[str, tuple[int, int, int, int, float, bool]] = {
    "vit_base_patch16_siglip": (16, 768, 12, 12, 4.0, False),
    "vit_base_patch32_siglip": (32, 768, 12, 12, 4.0, True),
    "vit_large_patch16_siglip": (16, 1024, 24, 16, 4.0, False),
    "vit_so400m_patch14_siglip": (14, 1152, 27, 16, 3.7362, False),
    "vit_so400m_patch16_siglip": (16, 1152, 27, 16, 3.7362, True),
    "vit_giantopt_patch16_siglip": (16, 1536, 40, 16, 4.0, True),
}
_TANH_AT = {"vit_large_patch16_siglip_512"}  # the SigLIP 2-only resolution of ViT-L
# Not in timm: the trunks of clipjax's tiny test architectures, so their exported JSON reads back.
_CLIPJAX_TRUNKS = {"vit_tiny_test_patch16_siglip_32": TimmViTConfig(
    "vit_tiny_test_patch16_siglip_32", 32, 16, 64, 2, 2, gelu_tanh=True),
                   # a 4 x 4 position table; sequences of 16 patches by default
                   "naflexvit_tiny_test_patch16_siglip": TimmViTConfig(
    "naflexvit_tiny_test_patch16_siglip", 64, 16, 64, 2, 2, gelu_tanh=True, naflex=True,
    max_num_patches=16)}

# timm's SigLIP 2 NaFlex trunks (timm/models/naflexvit.py): the fixed-resolution trunk's sizes
# with tanh GELU and a 16 x 16 position table (transformers' `num_patches` 256 for both).
NAFLEX_TRUNKS = {"naflexvit_base_patch16_siglip": "vit_base_patch16_siglip",
                 "naflexvit_so400m_patch16_siglip": "vit_so400m_patch16_siglip"}


def _eva02(name, size, patch, width, layers, heads):
  """EVA02 CLIP trunks (timm eva.py `eva02_*_clip_*`): separate q / k / v, SwiGLU with
  sub-LNs, 2-D RoPE on a 16 x 16 reference grid, class-token pooling, LayerNorm eps 1e-6."""
  return TimmViTConfig(name, size, patch, width, layers, heads, mlp_ratio=4 * 2 / 3,
                       class_token=True, pool="token", qkv="split", sub_ln=True, swiglu=True,
                       rope_ref_grid=16)


def _pe_core(name, size, patch, width, layers, heads, ref, mlp_ratio=4.0, class_token=True,
             offset=1.0):
  """Perception Encoder core trunks (timm eva.py `vit_pe_core_*`): fused qkv with a bias, a
  LayerNorm before the blocks, 2-D RoPE in "xy" order, an 8-head MAP head, eps 1e-5."""
  return TimmViTConfig(name, size, patch, width, layers, heads, mlp_ratio, class_token=class_token,
                       pool="map", ln_eps=1e-5, norm_pre=True, rope_ref_grid=ref,
                       rope_offset=offset, rope_xy=True, map_heads=8, map_mlp_ratio=4.0)


# The rest, by exact name. `pool` is timm's default for the name: open_clip's `timm_pool`
# replaces it (EVA01-g's default avg pooling with fc_norm becomes class-token pooling with the
# final norm, as timm decides the norms from the pooling).
TIMM_TRUNKS: dict[str, TimmViTConfig] = {c.timm_model_name: c for c in (
    # EVA01-g (timm eva.py): fused qkv with q / v biases, GELU MLP
    TimmViTConfig("eva_giant_patch14_224", 224, 14, 1408, 40, 16, 6144 / 1408,
                  class_token=True, pool="avg", qkv="eva"),
    _eva02("eva02_base_patch16_clip_224", 224, 16, 768, 12, 12),
    _eva02("eva02_large_patch14_clip_224", 224, 14, 1024, 24, 16),
    _eva02("eva02_large_patch14_clip_336", 336, 14, 1024, 24, 16),
    # EVA02-E: post-norm blocks, no RoPE, GELU MLP
    TimmViTConfig("eva02_enormous_patch14_clip_224", 224, 14, 1792, 64, 16, 15360 / 1792,
                  class_token=True, pool="token", qkv="eva", post_norm=True),
    _pe_core("vit_pe_core_tiny_patch16_384", 384, 16, 192, 12, 3, 24),
    _pe_core("vit_pe_core_small_patch16_384", 384, 16, 384, 12, 6, 24),
    _pe_core("vit_pe_core_base_patch16_224", 224, 16, 768, 12, 12, 14),
    _pe_core("vit_pe_core_large_patch14_336", 336, 14, 1024, 24, 16, 24),
    _pe_core("vit_pe_core_gigantic_patch14_448", 448, 14, 1536, 50, 16, 32, 8960 / 1536,
             class_token=False, offset=0.0),
    # timm's CLIP ViT-L/14 (MobileCLIP2-L-14): LayerNorm before the blocks, eps 1e-5
    TimmViTConfig("vit_large_patch14_clip_224", 224, 14, 1024, 24, 16, class_token=True,
                  pool="token", ln_eps=1e-5, norm_pre=True),
    # timm's ViT-M/16 without a class token, average-pooled, layer scale, qkv without bias
    TimmViTConfig("vit_medium_patch16_gap_256", 256, 16, 512, 12, 8, pool="avg", fc_norm=False,
                  qkv_bias=False, ls_init_value=1e-6),
    # MobileCLIP-B (timm vision_transformer_hybrid.py): a conv-BN stem of stride 16 in place of
    # the patch conv, positions for the patch tokens only (`no_embed_class`)
    TimmViTConfig("vit_base_mci_224", 224, 16, 768, 12, 12, class_token=True, pool="token",
                  stem="mci", pos_embed="patches"),
    # timm's ViT-M/16 with relative positions (vision_transformer_relpos.py): no absolute
    # positions, a 256-wide log-coordinate MLP bias per block, layer scale, qkv without bias
    TimmViTConfig("vit_relpos_medium_patch16_cls_224", 224, 16, 512, 12, 8, class_token=True,
                  pool="token", qkv_bias=False, ls_init_value=1e-6, pos_embed="none",
                  rel_pos_mlp=256),
)}


def timm_trunk(timm_model_name: str) -> TimmViTConfig:
  """The TimmViTConfig of a timm model name open_clip uses (timm's default pooling)."""
  if timm_model_name in _CLIPJAX_TRUNKS:
    return _CLIPJAX_TRUNKS[timm_model_name]
  if timm_model_name in TIMM_TRUNKS:
    return TIMM_TRUNKS[timm_model_name]
  if timm_model_name in NAFLEX_TRUNKS:
    patch, width, layers, heads, mlp_ratio, _ = TIMM_SIGLIP_TRUNKS[NAFLEX_TRUNKS[timm_model_name]]
    return TimmViTConfig(timm_model_name, 16 * patch, patch, width, layers, heads, mlp_ratio,
                         gelu_tanh=True, naflex=True)
  family, _, res = timm_model_name.rpartition("_")
  if family not in TIMM_SIGLIP_TRUNKS or not res.isdigit():
    known = [*(f"{f}_<res>" for f in TIMM_SIGLIP_TRUNKS), *NAFLEX_TRUNKS, *TIMM_TRUNKS]
    raise ValueError(f"timm model {timm_model_name!r} is not a trunk clipjax knows; known: "
                     f"{', '.join(known)}")
  patch, width, layers, heads, mlp_ratio, tanh = TIMM_SIGLIP_TRUNKS[family]
  return TimmViTConfig(timm_model_name, int(res), patch, width, layers, heads, mlp_ratio,
                       tanh or timm_model_name in _TANH_AT)


_PROJ = {None: "head", "none": "none", "linear": "linear"}  # open_clip timm_proj -> ours


def timm_tower(vision_cfg: dict) -> TimmViTConfig:
  """open_clip's `vision_cfg` of a timm tower (`timm_model_name`, `timm_pool`, `timm_proj`,
  ...) -> the trunk as open_clip builds it; options clipjax cannot honour are a ValueError."""
  v = dict(vision_cfg)
  name = v.pop("timm_model_name")
  trunk = timm_trunk(name)
  if v.pop("timm_model_pretrained", False):
    raise ValueError(f"vision_cfg timm_model_pretrained=true ({name}): clipjax loads open_clip "
                     "checkpoints, not timm's ImageNet weights; set it false")
  if v.get("image_size", trunk.image_size) != trunk.image_size:
    raise ValueError(f"vision_cfg image_size {v['image_size']} differs from timm's "
                     f"{trunk.image_size} for {name} (open_clip builds the trunk at timm's size)")
  v.pop("image_size", None)
  pool = v.pop("timm_pool", "avg")
  proj = v.pop("timm_proj", "linear")
  if pool not in ("", *TimmViTConfig.POOLS) or proj not in _PROJ:
    raise ValueError(f"vision_cfg of {name}: timm_pool {pool!r} / timm_proj {proj!r} not "
                     f"supported (pools: {', '.join(TimmViTConfig.POOLS)} or ''; projections: "
                     f"null, none, linear)")
  if v.pop("timm_drop", 0.0):
    raise ValueError(f"vision_cfg timm_drop ({name}): head dropout is not supported; set 0")
  drop_path = v.pop("timm_drop_path", None)
  if drop_path:  # a training regulariser only: inference and the weights are unaffected
    log.warning("vision_cfg timm_drop_path=%s (%s): stochastic depth is not implemented in "
                "clipjax; training runs without it", drop_path, name)
  if v:
    raise ValueError(f"vision_cfg keys of a timm tower not supported by clipjax: {sorted(v)}")
  if trunk.is_siglip and (pool, proj) != ("map", "none"):
    raise ValueError(f"vision_cfg of {name}: SigLIP trunks are built with timm_pool 'map' and "
                     f"timm_proj 'none', got {pool!r} / {proj!r}")
  return dataclasses.replace(trunk, pool=pool or trunk.pool, proj=_PROJ[proj])
