"""Hugging Face text encoders as OpenCLIP text towers (open_clip's `HFTextEncoder`), in Flax.

RoBERTa / XLM-RoBERTa (post-LN BERT blocks, learned positions offset by the padding id), the T5
/ mT5 encoder (RMS LayerNorm, bucketed relative position bias, gated-GELU or ReLU feed-forward)
and M2M100's (NLLB, `hf_m2m100.py`), then open_clip's pooler over the non-padding tokens and its
projection (`mlp`: Linear -> GELU -> Linear without biases; `linear`; none when the widths
already agree).

Module names are the HF modules' names (`embeddings/word_embeddings`,
`encoder/layer_3/attention/self/query`, `block_0/layer_0/SelfAttention/relative_attention_bias`,
`layer_N` for torch's `layer.N`), so the parameter paths of the tower read like open_clip's
`text.transformer.*` / `text.proj.*` keys and conversion is the usual rename rule. Dropout is not
applied (HF's dropout is active when open_clip fine-tunes these towers in train mode: a
documented difference for training, none for inference).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.models.configs import HFTextConfig
from clipjax.models.hf_m2m100 import M2M100Encoder
from clipjax.models.layers import (
  Dtype,
  LayerNorm,
  exact_gelu,
  key_padding_bias,
  layer_stack,
  remat_policy,
  tanh_gelu,
)

_INIT = nn.initializers.normal(0.02)  # HF's initializer_range for BERT-style models


def _dense(width: int, dtype: Dtype, name: str, bias: bool = True) -> nn.Dense:
  return nn.Dense(width, use_bias=bias, dtype=dtype, name=name, kernel_init=_INIT)


# ---------------------------------------------------------------- RoBERTa / XLM-RoBERTa
class _RobertaEmbeddings(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    cfg = self.cfg
    # positions count the real tokens from padding_idx + 1; padding keeps padding_idx
    positions = jnp.cumsum(mask, axis=1) * mask + cfg.pad_token_id
    embed = lambda n, name: nn.Embed(n, cfg.width, embedding_init=_INIT, name=name)
    x = embed(cfg.vocab_size, "word_embeddings")(ids)
    x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(ids))
    x = x + embed(cfg.max_positions, "position_embeddings")(positions)
    return LayerNorm(self.dtype, cfg.layer_norm_eps, name="LayerNorm")(x)


class _SelfAttention(nn.Module):
  heads: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    n, length, width = x.shape
    split = lambda t: t.reshape(n, length, self.heads, width // self.heads)
    q, k, v = (split(_dense(width, self.dtype, name)(x)) for name in ("query", "key", "value"))
    return jax.nn.dot_product_attention(q, k, v, bias=bias).reshape(n, length, width)


class _DenseAddNorm(nn.Module):
  """BERT's `*Output`: dense, add the residual, LayerNorm."""
  width: int
  eps: float
  dtype: Dtype

  @nn.compact
  def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
    h = _dense(self.width, self.dtype, "dense")(h)
    return LayerNorm(self.dtype, self.eps, name="LayerNorm")(h + residual)


class _Attention(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    h = _SelfAttention(self.cfg.heads, self.dtype, name="self")(x, bias)
    return _DenseAddNorm(x.shape[-1], self.cfg.layer_norm_eps, self.dtype, name="output")(h, x)


class _Intermediate(nn.Module):
  width: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return exact_gelu(_dense(self.width, self.dtype, "dense")(x))


class _RobertaLayer(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    x = _Attention(self.cfg, self.dtype, name="attention")(x, bias)
    h = _Intermediate(self.cfg.mlp_width, self.dtype, name="intermediate")(x)
    return _DenseAddNorm(x.shape[-1], self.cfg.layer_norm_eps, self.dtype, name="output")(h, x)


class _RobertaStack(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype
  remat: bool | str
  scan: bool

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    return layer_stack(_RobertaLayer, (self.cfg, self.dtype), self.cfg.layers, "layer",
                       remat=self.remat, scan=self.scan)(x, bias)


class RobertaEncoder(nn.Module):
  """RobertaModel without its pooling layer: ids, mask [N, L] -> hidden [N, L, W]."""
  cfg: HFTextConfig
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  scan: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    x = _RobertaEmbeddings(self.cfg, self.dtype, name="embeddings")(ids, mask)
    bias = key_padding_bias(mask, x.dtype)
    return _RobertaStack(self.cfg, self.dtype, self.remat, self.scan, name="encoder")(x, bias)


# ---------------------------------------------------------------- T5 / mT5 encoder
class RMSNorm(nn.Module):
  """T5LayerNorm: x / sqrt(mean(x^2) + eps) * weight, no mean, no bias; float32 statistics."""
  eps: float
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (weight * x32).astype(self.dtype)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bidirectional bucket of (key - query) for an [L, L] grid: half the buckets per
  direction, exact below num_buckets / 4, logarithmic up to max_distance."""
  rel = np.arange(length)[None, :] - np.arange(length)[:, None]
  half = num_buckets // 2
  buckets = (rel > 0).astype(np.int64) * half
  rel = np.abs(rel)
  exact = half // 2
  # (positions below `exact` take the exact bucket; max(rel, 1) only keeps log() finite there)
  large = exact + (np.log(np.maximum(rel, 1).astype(np.float32) / exact)
                   / math.log(max_distance / exact) * (half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return buckets + np.where(rel < exact, rel, large)


class _T5Attention(nn.Module):
  cfg: HFTextConfig
  has_bias: bool
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array | None, mask_bias: jax.Array):
    cfg = self.cfg
    n, length, _ = x.shape
    inner = cfg.heads * cfg.head_dim
    split = lambda t: t.reshape(n, length, cfg.heads, cfg.head_dim)
    q, k, v = (split(_dense(inner, self.dtype, name, bias=False)(x)) for name in "qkv")
    if self.has_bias:  # block 0 computes the position bias; later blocks reuse it
      table = nn.Embed(cfg.relative_buckets, cfg.heads, embedding_init=_INIT,
                       name="relative_attention_bias")
      buckets = relative_position_buckets(length, cfg.relative_buckets, cfg.relative_max_distance)
      bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None].astype(x.dtype)
    # T5 does not scale the logits by 1/sqrt(head_dim)
    out = jax.nn.dot_product_attention(q, k, v, bias=bias + mask_bias, scale=1.0)
    return _dense(x.shape[-1], self.dtype, "o", bias=False)(out.reshape(n, length, inner)), bias


class _T5SelfAttentionLayer(nn.Module):
  cfg: HFTextConfig
  has_bias: bool
  dtype: Dtype

  @nn.compact
  def __call__(self, x, bias, mask_bias):
    h = RMSNorm(self.cfg.layer_norm_eps, self.dtype, name="layer_norm")(x)
    h, bias = _T5Attention(self.cfg, self.has_bias, self.dtype, name="SelfAttention")(
        h, bias, mask_bias)
    return x + h, bias


class _T5DenseReluDense(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.cfg
    if cfg.gated_act:  # T5 v1.1 / mT5: gelu_new(wi_0 x) * wi_1 x (gelu_new: the tanh form)
      h = tanh_gelu(_dense(cfg.mlp_width, self.dtype, "wi_0", bias=False)(x)) * _dense(
          cfg.mlp_width, self.dtype, "wi_1", bias=False)(x)
    else:  # original T5: relu(wi x)
      h = nn.relu(_dense(cfg.mlp_width, self.dtype, "wi", bias=False)(x))
    return _dense(x.shape[-1], self.dtype, "wo", bias=False)(h)


class _T5FFLayer(nn.Module):
  cfg: HFTextConfig
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = RMSNorm(self.cfg.layer_norm_eps, self.dtype, name="layer_norm")(x)
    return x + _T5DenseReluDense(self.cfg, self.dtype, name="DenseReluDense")(h)


class _T5Block(nn.Module):
  cfg: HFTextConfig
  has_bias: bool
  dtype: Dtype

  @nn.compact
  def __call__(self, x, bias, mask_bias):
    x, bias = _T5SelfAttentionLayer(self.cfg, self.has_bias, self.dtype, name="layer_0")(
        x, bias, mask_bias)
    return _T5FFLayer(self.cfg, self.dtype, name="layer_1")(x), bias


class T5Encoder(nn.Module):
  """HF T5Stack (encoder): ids, mask [N, L] -> hidden [N, L, W]. Scanned, `block_0` (which holds
  the relative position-bias table) stays apart and `block` stacks blocks 1 .. L-1."""
  cfg: HFTextConfig
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  scan: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    cfg = self.cfg
    x = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=nn.initializers.normal(1.0),
                 name="embed_tokens")(ids).astype(self.dtype)
    mask_bias = key_padding_bias(mask, self.dtype)
    policy = remat_policy(self.remat)
    first = _T5Block if policy is None else nn.remat(_T5Block, policy=policy)
    x, bias = first(cfg, True, self.dtype, name="block_0")(x, None, mask_bias)
    x = layer_stack(_T5Block, (cfg, False, self.dtype), cfg.layers - 1, "block",
                    remat=self.remat, scan=self.scan, start=1)(x, bias, mask_bias)
    return RMSNorm(cfg.layer_norm_eps, self.dtype, name="final_layer_norm")(x)


# ---------------------------------------------------------------- open_clip's HFTextEncoder
class HFTextTower(nn.Module):
  """ids: int [N, L] (HF tokenizer ids, padded with `pad_token_id`) -> [N, embed_dim] float32."""
  cfg: HFTextConfig
  embed_dim: int
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  scan: bool = False  # blocks under nn.scan (layers.layer_stack)

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    cfg = self.cfg
    if ids.ndim != 2:
      raise ValueError(f"HF text tower expects token ids of shape [N, L], got {ids.shape}")
    mask = (ids != cfg.pad_token_id).astype(jnp.int32)
    encoder = {"roberta": RobertaEncoder, "t5": T5Encoder, "m2m_100": M2M100Encoder}[cfg.family]
    hidden = encoder(cfg, self.dtype, self.remat, self.scan, name="transformer")(ids, mask)
    hidden = hidden.astype(jnp.float32)
    if cfg.pooler == "mean_pooler":
      m = mask.astype(jnp.float32)[..., None]
      pooled = jnp.sum(hidden * m, axis=1) / jnp.sum(m, axis=1)
    else:  # cls_last_hidden_state_pooler, or cls_pooler of an encoder without a pooler layer
      pooled = hidden[:, 0]
    dense = lambda width, name: nn.Dense(width, use_bias=False, name=name,
                                         kernel_init=nn.initializers.lecun_normal())
    if cfg.proj_type == "mlp":
      return dense(self.embed_dim, "proj_2")(exact_gelu(
          dense((cfg.width + self.embed_dim) // 2, "proj_0")(pooled)))
    if cfg.proj_type == "linear":
      return dense(self.embed_dim, "proj")(pooled)
    return pooled
