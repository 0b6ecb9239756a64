"""timm ViT-family image towers as open_clip wraps them (`visual.trunk`, open_clip's
`TimmModel`): SigLIP / SigLIP 2 (and NaFlex), EVA01, EVA02, the Perception Encoder, timm's
CLIP ViT (MobileCLIP2-L-14), its average-pooled and relative-position ViT-M, and MobileCLIP-B's
hybrid (`TimmViTConfig` says which).

Patch embedding (`patch_embed.proj`, a conv; no bias when `norm_pre` follows; or MobileCLIP-B's
conv-BN stem `patch_embed.backbone`), an optional class token `cls_token`, learned positions
`pos_embed` (covering the class token, the patches only, or absent), the blocks
(`models.timm_blocks`), then pooling: the MAP head `attn_pool`, the class token, or the mean of
the patch tokens; the final `norm` (before pooling) or `fc_norm` (after it). The pooled feature
is the embedding (`timm_proj: none`), goes through the trunk's classifier `head` (`timm_proj:
null`: timm built with `num_classes=embed_dim`), or through open_clip's bias-free
`visual.head.proj` (`timm_proj: linear`). Parameter paths are open_clip's state-dict keys
(`visual/trunk/blocks_0/attn/qkv/kernel`).
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import TimmViTConfig
from clipjax.models.layers import (
  Dtype,
  LayerNorm,
  check_images,
  exact_gelu,
  kept_patches,
  layer_stack,
  tanh_gelu,
)
from clipjax.models.naflex import NaFlexEmbeds, check_naflex_batch
from clipjax.models.resnet import FrozenBatchNorm
from clipjax.models.rope import rope_tables
from clipjax.models.timm_blocks import MAPHead, TimmBlock

_init = nn.initializers.truncated_normal(0.02)  # timm's trunc_normal_(std=.02)


class PatchEmbed(nn.Module):
  """timm `PatchEmbed`: a stride-`patch` conv `proj`, [N, H, W, 3] -> [N, P, W]."""
  width: int
  patch: int
  dtype: Dtype = jnp.float32
  bias: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = nn.Conv(self.width, (self.patch,) * 2, strides=(self.patch,) * 2, padding="VALID",
                use_bias=self.bias, dtype=self.dtype, name="proj")(images.astype(self.dtype))
    return x.reshape(x.shape[0], -1, self.width)  # row-major over the grid, as timm's flatten


class _ConvNormAct(nn.Module):
  """timm `ConvNormAct` with a stride = kernel conv and no padding: `conv`, then (`norm`)
  BatchNorm `bn` (running statistics; see models/resnet.py) and GELU."""
  features: int
  kernel: int
  norm: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (self.kernel,) * 2, strides=(self.kernel,) * 2, padding="VALID",
                use_bias=not self.norm, dtype=self.dtype, name="conv")(x)
    return exact_gelu(FrozenBatchNorm(dtype=self.dtype, name="bn")(x)) if self.norm else x


class ConvStem(nn.Module):
  """timm `HybridEmbed` over `ConvStem` as `vit_base_mci_224` builds it (MobileCLIP-B): convs
  4x4/4 and 2x2/2 to width / 4 with BatchNorm + GELU, then 2x2/2 to `width` with a bias and
  no norm; [N, H, W, 3] -> [N, (H/16)(W/16), width]."""
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images.astype(self.dtype)
    for i, (features, kernel) in enumerate(((self.width // 4, 4), (self.width // 4, 2),
                                            (self.width, 2))):
      x = _ConvNormAct(features, kernel, i < 2, self.dtype, name=f"backbone_{i}")(x)
    return x.reshape(x.shape[0], -1, self.width)


class TimmViTTrunk(nn.Module):
  cfg: TimmViTConfig
  embed_dim: int
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  attention: str = "auto"
  scan: bool = False
  patch_dropout: float = 0.0  # as open_clip's / timm's: the class token always kept

  @nn.compact
  def __call__(self, images: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
    cfg = self.cfg
    act = tanh_gelu if cfg.gelu_tanh else exact_gelu
    lengths, rope = None, None
    if cfg.naflex:  # timm's NaFlexVit: `embeds/proj` + `embeds/pos_embed`, padding masked
      x = NaFlexEmbeds(cfg.width, cfg.grid, self.dtype, name="embeds")(
          images["pixel_values"], images["spatial_shapes"])
      # at least one key: an all-padding filler row then gives numbers, not NaN
      lengths = jnp.maximum(jnp.sum(images["pixel_attention_mask"] != 0, axis=-1,
                                    dtype=jnp.int32), 1)
    else:
      x = (ConvStem(cfg.width, self.dtype, name="patch_embed") if cfg.stem == "mci" else
           PatchEmbed(cfg.width, cfg.patch_size, self.dtype, not cfg.norm_pre,
                      name="patch_embed"))(images)
      if cfg.pos_embed == "patches":  # timm's no_embed_class: added before the class token
        x = x + self.param("pos_embed", _init, (1, cfg.grid ** 2, cfg.width)).astype(x.dtype)
      if cfg.class_token:
        cls = self.param("cls_token", _init, (1, 1, cfg.width))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.width)),
                             x], axis=1)
      if cfg.pos_embed == "all":
        pos = self.param("pos_embed", _init, (1, cfg.grid ** 2 + cfg.prefix_tokens, cfg.width))
        x = x + pos.astype(x.dtype)
      if cfg.rope_ref_grid is not None:
        rope = tuple(jnp.asarray(t) for t in rope_tables(
            cfg.grid, cfg.width // cfg.heads, cfg.rope_ref_grid, cfg.rope_offset, cfg.rope_xy))
      if self.patch_dropout and self.has_rng("patch_dropout"):
        if cfg.rel_pos_mlp:  # the bias is laid out over the whole grid (timm has none either)
          raise ValueError(f"{cfg.timm_model_name}: patch dropout is not supported with "
                           "relative position bias; set model.patch_dropout=0")
        x, rope = self._drop_patches(x, rope)
    if cfg.norm_pre:
      x = LayerNorm(self.dtype, cfg.ln_eps, name="norm_pre")(x)
    x = layer_stack(TimmBlock, (cfg, act, self.dtype, self.attention), cfg.layers, "blocks",
                    remat=self.remat, scan=self.scan)(x, lengths, rope)
    if not cfg.uses_fc_norm:
      x = LayerNorm(self.dtype, cfg.ln_eps, name="norm")(x)
    if cfg.pool == "map":
      x = MAPHead(cfg.map_heads or cfg.heads, int(cfg.width * (cfg.map_mlp_ratio or cfg.mlp_ratio)),
                  act, self.dtype, self.attention, cfg.ln_eps, name="attn_pool")(x, lengths)
    elif cfg.pool == "token":
      x = x[:, 0]
    else:  # avg: the patch tokens
      x = jnp.mean(x[:, cfg.prefix_tokens:].astype(jnp.float32), axis=1).astype(x.dtype)
    if cfg.uses_fc_norm:
      x = LayerNorm(self.dtype, cfg.ln_eps, name="fc_norm")(x)
    if cfg.proj == "head":  # timm's classifier, built by open_clip with num_classes=embed_dim
      x = nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=_init, name="head")(x)
    return x

  def _drop_patches(self, x: jax.Array, rope):
    """Patch dropout on the tokens and, for a rotary trunk, the same rows of its tables."""
    prefix = self.cfg.prefix_tokens
    chosen = kept_patches(x.shape[0], x.shape[1] - prefix, self.patch_dropout,
                          self.make_rng("patch_dropout"))
    patches = jnp.take_along_axis(x, chosen[..., None] + prefix, axis=1)
    x = jnp.concatenate([x[:, :prefix], patches], axis=1)
    if rope is not None:
      rope = tuple(t[chosen] for t in rope)  # [N, K, Dh] per image
    return x, rope


class TimmVisionTower(nn.Module):
  """open_clip's `TimmModel`: the trunk, then its `head` or open_clip's `head.proj` as
  `cfg.proj` says (with `timm_proj: none` the trunk width must equal `embed_dim`)."""
  cfg: TimmViTConfig
  embed_dim: int
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)
  scan: bool = False  # blocks under nn.scan (layers.layer_stack)
  patch_dropout: float = 0.0  # see TimmViTTrunk

  @nn.compact
  def __call__(self, images: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
    """images: [N, H, W, 3] normalised pixels, or for a NaFlex trunk the dict of
    `models.naflex` -> [N, embed_dim] float32 (not L2-normalised)."""
    cfg = self.cfg
    if cfg.proj == "none" and self.embed_dim != cfg.width:
      raise ValueError(f"timm tower {cfg.timm_model_name}: embed_dim {self.embed_dim} must "
                       f"equal the trunk width {cfg.width} (timm_proj 'none')")
    if cfg.naflex:
      check_naflex_batch(images, cfg.patch_size, cfg.timm_model_name)
    else:
      check_images(images, cfg.image_size, cfg.timm_model_name)
    x = TimmViTTrunk(cfg, self.embed_dim, self.dtype, self.remat, self.attention, self.scan,
                     self.patch_dropout, name="trunk")(images)
    if cfg.proj == "linear":  # open_clip's own bias-free projection after the trunk
      x = _HeadProj(self.embed_dim, self.dtype, name="head")(x)
    return x.astype(jnp.float32)


class _HeadProj(nn.Module):
  """open_clip's `TimmModel.head` with `proj: linear`: `head.proj`, no bias."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, use_bias=False, dtype=self.dtype, kernel_init=_init,
                    name="proj")(x)
