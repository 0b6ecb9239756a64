"""The SigLIP image tower: timm's VisionTransformer as open_clip wraps it (`visual.trunk`).

Patch embedding (a conv with bias), learned positions without a class token, pre-LN blocks
(`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`; LayerNorm eps 1e-6), the
final `norm`, and the MAP head `attn_pool`: one learned probe (`latent`) attends over the
patches through `q` and `kv`, then `proj` and a residual `norm` + `mlp`. Parameter paths are
open_clip's state-dict keys (`visual/trunk/blocks_0/attn/qkv/kernel`); `timm_proj: none`, so
the pooled feature is the embedding.
"""
from __future__ import annotations

from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import TimmViTConfig
from clipjax.models.layers import (
  Dtype,
  LayerNorm,
  check_images,
  dot_product_attention,
  drop_patches,
  exact_gelu,
  layer_stack,
  tanh_gelu,
)
from clipjax.models.naflex import NaFlexEmbeds, check_naflex_batch

TIMM_LN_EPS = 1e-6  # timm's LayerNorm default, used by every SigLIP trunk
_init = nn.initializers.truncated_normal(0.02)  # timm's trunc_normal_(std=.02) for Linears


class TimmMlp(nn.Module):
  hidden: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=_init, name="fc1")(x)
    return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_init, name="fc2")(self.act(h))


class TimmAttention(nn.Module):
  """timm `Attention`: fused `qkv` (with bias; q, k, v then heads in the output columns),
  softmax(q k^T / sqrt(head_dim)) v, `proj`."""
  heads: int
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    """x: [N, L, W] -> [N, L, W]; `lengths` [N]: only the first lengths[i] tokens are keys
    (NaFlex padding), None = all."""
    n, length, width = x.shape
    qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=_init, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(n, length, 3, self.heads, width // self.heads), 3, axis=2)
    out = dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], self.attention,
                                key_value_seq_lengths=lengths)
    return nn.Dense(width, dtype=self.dtype, kernel_init=_init, name="proj")(
        out.reshape(n, length, width))


class TimmBlock(nn.Module):
  heads: int
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    x = x + TimmAttention(self.heads, self.dtype, self.attention, name="attn")(
        LayerNorm(self.dtype, TIMM_LN_EPS, name="norm1")(x), lengths)
    return x + TimmMlp(self.mlp_width, self.act, self.dtype, name="mlp")(
        LayerNorm(self.dtype, TIMM_LN_EPS, name="norm2")(x))


class MAPHead(nn.Module):
  """timm `AttentionPoolLatent` (one latent query, `q_proj`, no qk-norm): [N, L, W] -> [N, W]."""
  heads: int
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    n, length, width = x.shape
    head_dim = width // self.heads
    latent = self.param("latent", nn.initializers.truncated_normal(width ** -0.5),
                        (1, 1, width))
    q = nn.Dense(width, dtype=self.dtype, kernel_init=_init, name="q")(latent.astype(self.dtype))
    q = jnp.broadcast_to(q.reshape(1, 1, self.heads, head_dim), (n, 1, self.heads, head_dim))
    kv = nn.Dense(2 * width, dtype=self.dtype, kernel_init=_init, name="kv")(x)
    k, v = jnp.split(kv.reshape(n, length, 2, self.heads, head_dim), 2, axis=2)
    pooled = dot_product_attention(q, k[:, :, 0], v[:, :, 0], self.attention,
                                   key_value_seq_lengths=lengths).reshape(n, 1, width)
    pooled = nn.Dense(width, dtype=self.dtype, kernel_init=_init, name="proj")(pooled)
    pooled = pooled + TimmMlp(self.mlp_width, self.act, self.dtype, name="mlp")(
        LayerNorm(self.dtype, TIMM_LN_EPS, name="norm")(pooled))
    return pooled[:, 0]


class PatchEmbed(nn.Module):
  """timm `PatchEmbed`: a stride-`patch` conv `proj` (with bias), [N, H, W, 3] -> [N, P, W]."""
  width: int
  patch: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = nn.Conv(self.width, (self.patch,) * 2, strides=(self.patch,) * 2, padding="VALID",
                dtype=self.dtype, name="proj")(images.astype(self.dtype))
    return x.reshape(x.shape[0], -1, self.width)  # row-major over the grid, as timm's flatten


class TimmViTTrunk(nn.Module):
  cfg: TimmViTConfig
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  attention: str = "auto"
  scan: bool = False
  patch_dropout: float = 0.0  # as VisionTransformer's (no class token: every token a patch)

  @nn.compact
  def __call__(self, images: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
    cfg = self.cfg
    act = tanh_gelu if cfg.gelu_tanh else exact_gelu
    lengths = None
    if cfg.naflex:  # timm's NaFlexVit: `embeds/proj` + `embeds/pos_embed`, padding masked
      x = NaFlexEmbeds(cfg.width, cfg.grid, self.dtype, name="embeds")(
          images["pixel_values"], images["spatial_shapes"])
      # at least one key: an all-padding filler row then gives numbers, not NaN
      lengths = jnp.maximum(jnp.sum(images["pixel_attention_mask"] != 0, axis=-1,
                                    dtype=jnp.int32), 1)
    else:
      x = PatchEmbed(cfg.width, cfg.patch_size, self.dtype, name="patch_embed")(images)
      pos = self.param("pos_embed", nn.initializers.truncated_normal(0.02),
                       (1, cfg.grid ** 2, cfg.width))
      x = x + pos.astype(x.dtype)
      if self.patch_dropout and self.has_rng("patch_dropout"):
        x = drop_patches(x, self.patch_dropout, self.make_rng("patch_dropout"), prefix=0)
    x = layer_stack(TimmBlock, (cfg.heads, cfg.mlp_width, act, self.dtype, self.attention),
                    cfg.layers, "blocks", remat=self.remat, scan=self.scan)(x, lengths)
    x = LayerNorm(self.dtype, TIMM_LN_EPS, name="norm")(x)
    return MAPHead(cfg.heads, cfg.mlp_width, act, self.dtype, self.attention,
                   name="attn_pool")(x, lengths)


class TimmVisionTower(nn.Module):
  """open_clip's `TimmModel` with `timm_proj: none`: the trunk's pooled feature is the image
  embedding, so `embed_dim` must equal the trunk width."""
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
    if self.embed_dim != self.cfg.width:
      raise ValueError(f"timm tower {self.cfg.timm_model_name}: embed_dim {self.embed_dim} must "
                       f"equal the trunk width {self.cfg.width} (timm_proj 'none')")
    if self.cfg.naflex:
      check_naflex_batch(images, self.cfg.patch_size, self.cfg.timm_model_name)
    else:
      check_images(images, self.cfg.image_size, self.cfg.timm_model_name)
    return TimmViTTrunk(self.cfg, self.dtype, self.remat, self.attention, self.scan,
                        self.patch_dropout, name="trunk")(
        images).astype(jnp.float32)
