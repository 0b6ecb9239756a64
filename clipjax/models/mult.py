"""MulT fusion tower (seed 001 §4.2, docs/methods.md §6): a crossmodal transformer over raw image
patches and text token embeddings, giving one fused vector M per image–text pair.

Inputs are the image cut into P x P patches, each flattened to its P²·C raw values (row-major
over the grid, 1-D learned positions, as the thesis), and the caption's token ids embedded by
the tower's own table (1-D learned positions). Two crossmodal stacks run side by side, as in
MulT: text queries attend to the image patches (`text_from_image`) and patches attend to the
text tokens (`image_from_text`, padding masked), each block pre-LN cross-attention + MLP with
residuals. Pooling (documented choice): the masked mean of the text stream and the mean of the
image stream, concatenated, LayerNorm, `proj` to the joint space. MulT's per-modality
self-attention transformers after the crossmodal ones are left out (two modalities, small
towers); the fused vector is not normalised here.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.layers import MLP, Dtype, LayerNorm, exact_gelu


@dataclasses.dataclass(frozen=True)
class MulTConfig:
  width: int = 128
  heads: int = 4
  layers: int = 2
  patch_size: int = 8
  vocab_size: int = 49408
  context_length: int = 77
  pad_id: int = 0


class _CrossBlock(nn.Module):
  heads: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array | None) -> jax.Array:
    q = LayerNorm(self.dtype, name="ln_q")(x)
    kv = LayerNorm(self.dtype, name="ln_kv")(context)
    x = x + nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype, name="attn")(
        q, kv, mask=mask)
    return x + MLP(4 * x.shape[-1], exact_gelu, self.dtype, name="mlp")(
        LayerNorm(self.dtype, name="ln_2")(x))


class MulTFusion(nn.Module):
  cfg: MulTConfig
  embed_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, ids: jax.Array) -> jax.Array:
    """images: [N, S, S, 3] normalised pixels; ids: int [N, L] -> M [N, embed_dim] float32."""
    cfg, dt = self.cfg, self.dtype
    n, size, _, channels = images.shape
    p = cfg.patch_size
    if size % p:
      raise ValueError(f"MulT patch_size {p} must divide the image size {size}")
    grid = size // p
    patches = images.reshape(n, grid, p, grid, p, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, grid * grid, p * p * channels).astype(dt)
    init = nn.initializers.normal(0.02)
    x_img = nn.Dense(cfg.width, dtype=dt, name="patch_proj")(patches)
    x_img = x_img + self.param("image_positions", init, (grid * grid, cfg.width)).astype(dt)
    length = ids.shape[1]
    x_txt = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=init, name="token_embedding")(ids)
    x_txt = x_txt.astype(dt) + self.param("text_positions", init, (cfg.context_length,
                                                                    cfg.width))[:length].astype(dt)
    real = ids != cfg.pad_id  # [N, L]
    text_keys = real[:, None, None, :]  # image queries never attend to text padding
    for i in range(cfg.layers):
      x_txt, x_img = (
          _CrossBlock(cfg.heads, dt, name=f"text_from_image_{i}")(x_txt, x_img, None),
          _CrossBlock(cfg.heads, dt, name=f"image_from_text_{i}")(x_img, x_txt, text_keys))
    w = real.astype(jnp.float32)[..., None]
    text_pool = jnp.sum(x_txt.astype(jnp.float32) * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
    pooled = jnp.concatenate([text_pool, x_img.astype(jnp.float32).mean(1)], axis=-1)
    pooled = LayerNorm(jnp.float32, name="ln_post")(pooled)
    return nn.Dense(self.embed_dim, name="proj")(pooled).astype(jnp.float32)
