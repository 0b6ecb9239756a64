"""The M2M100 encoder (NLLB-200, as NLLB-CLIP's text tower) in Flax, after transformers'
`M2M100Encoder`.

Token embeddings times sqrt(width) (`scale_embedding`), plus fixed sinusoidal positions (the
tensor2tensor table: sines then cosines, position ids counted from `pad_token_id + 1` over the
real tokens, padding on the all-zero row `pad_token_id`); pre-norm blocks (`self_attn` with
biased q / k / v / out projections, then `fc1` -> activation -> `fc2`, each with its LayerNorm);
a final `layer_norm`. Module names are transformers' (`layers_3/self_attn/q_proj`), so the
parameter paths read like open_clip's `text.transformer.*` keys. Dropout and LayerDrop
(training only in transformers) are not applied.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import HFTextConfig
from clipjax.models.layers import Dtype, LayerNorm, exact_gelu, key_padding_bias, layer_stack

_INIT = nn.initializers.normal(0.02)  # transformers' init_std for M2M100


def sinusoidal_positions(positions: jax.Array, width: int, pad_id: int) -> jax.Array:
  """[N, L] int position ids -> [N, L, width] float32: sin(p * f_i) then cos(p * f_i) with
  f_i = exp(-i * log(10000) / (width / 2 - 1)); the row of `pad_id` is zero (odd widths get a
  zero last column), as M2M100SinusoidalPositionalEmbedding's table."""
  half = width // 2
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000) / (half - 1)))
  angles = positions.astype(jnp.float32)[..., None] * freqs
  table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if width % 2:
    table = jnp.pad(table, [(0, 0)] * (table.ndim - 1) + [(0, 1)])
  return jnp.where((positions == pad_id)[..., None], 0.0, table)


class _SelfAttention(nn.Module):
  heads: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    n, length, width = x.shape
    dense = lambda name: nn.Dense(width, dtype=self.dtype, name=name, kernel_init=_INIT)
    split = lambda t: t.reshape(n, length, self.heads, width // self.heads)
    q, k, v = (split(dense(name)(x)) for name in ("q_proj", "k_proj", "v_proj"))
    out = jax.nn.dot_product_attention(q, k, v, bias=bias)  # scale 1/sqrt(head_dim)
    return dense("out_proj")(out.reshape(n, length, width))


class _EncoderLayer(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    cfg = self.cfg
    norm = lambda name: LayerNorm(self.dtype, cfg.layer_norm_eps, name=name)
    x = x + _SelfAttention(cfg.heads, self.dtype, name="self_attn")(
        norm("self_attn_layer_norm")(x), bias)
    act = nn.relu if cfg.activation == "relu" else exact_gelu
    h = act(nn.Dense(cfg.mlp_width, dtype=self.dtype, name="fc1", kernel_init=_INIT)(
        norm("final_layer_norm")(x)))
    return x + nn.Dense(cfg.width, dtype=self.dtype, name="fc2", kernel_init=_INIT)(h)


class M2M100Encoder(nn.Module):
  """M2M100Encoder: ids, mask [N, L] -> hidden [N, L, W] (after the final LayerNorm)."""
  cfg: HFTextConfig
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  scan: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    cfg = self.cfg
    scale = math.sqrt(cfg.width) if cfg.scale_embedding else 1.0
    x = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=_INIT, name="embed_tokens")(ids) * scale
    positions = jnp.cumsum(mask, axis=1) * mask + cfg.pad_token_id
    x = (x + sinusoidal_positions(positions, cfg.width, cfg.pad_token_id)).astype(self.dtype)
    bias = key_padding_bias(mask, x.dtype)
    x = layer_stack(_EncoderLayer, (cfg, self.dtype), cfg.layers, "layers", remat=self.remat,
                    scan=self.scan)(x, bias)
    return LayerNorm(self.dtype, cfg.layer_norm_eps, name="layer_norm")(x)
