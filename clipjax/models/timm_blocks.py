"""The blocks of timm's ViT-family trunks (`VisionTransformer`, `Eva`), with timm's parameter
names, as open_clip holds them under `visual.trunk`.

One block covers the families open_clip uses: SigLIP and timm's CLIP ViTs (fused `qkv` with a
bias), EVA01 / EVA02-E (`qkv` without a bias plus `q_bias` / `v_bias`, the key unbiased),
EVA02 (separate `q_proj` / `k_proj` / `v_proj`, sub-LN `attn.norm` before `proj`, SwiGLU
`fc1_g` / `fc1_x` with sub-LN `mlp.norm`, 2-D rotary embedding), the Perception Encoder
(rotary embedding on a fused `qkv`), layer scale `ls1` / `ls2`, the post-norm blocks of
EVA02-E (`x + norm1(attn(x))`) and the relative-position ViT's `attn.rel_pos` bias. Linear
layers use timm's trunc_normal(0.02) init.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.models.configs import TimmViTConfig
from clipjax.models.layers import Dtype, LayerNorm, LayerScale, dot_product_attention
from clipjax.models.rope import rotate_pairs

_init = nn.initializers.truncated_normal(0.02)  # timm's trunc_normal_(std=.02) for Linears


def _dense(features: int, dtype: Dtype, name: str, bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=bias, dtype=dtype, kernel_init=_init, name=name)


class TimmMlp(nn.Module):
  """timm `Mlp` (`fc1` -> act -> [`norm`] -> `fc2`) or, `swiglu`, timm `SwiGLU`
  (silu(`fc1_g` x) · `fc1_x` x -> [`norm`] -> `fc2`); `norm` is EVA02's sub-LN."""
  hidden: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  swiglu: bool = False
  norm_eps: float | None = None  # the sub-LN's eps; None: no sub-LN
  out_features: int | None = None  # fc2's width; None: the input's

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.swiglu:
      h = (jax.nn.silu(_dense(self.hidden, self.dtype, "fc1_g")(x))
           * _dense(self.hidden, self.dtype, "fc1_x")(x))
    else:
      h = self.act(_dense(self.hidden, self.dtype, "fc1")(x))
    if self.norm_eps is not None:
      h = LayerNorm(self.dtype, self.norm_eps, name="norm")(h)
    return _dense(self.out_features or x.shape[-1], self.dtype, "fc2")(h)


def relative_log_coords(grid: int) -> np.ndarray:
  """timm's `gen_relative_log_coords(mode='cr')`: every (row, column) offset between two
  cells of a grid x grid window as sign(d) · log(1 + |d|), [2·grid - 1, 2·grid - 1, 2]."""
  d = np.arange(-(grid - 1), grid, dtype=np.float32)
  table = np.stack(np.meshgrid(d, d, indexing="ij"), axis=-1)
  return np.sign(table) * np.log(np.float32(1) + np.abs(table))


def relative_position_index(grid: int) -> np.ndarray:
  """timm's `gen_relative_position_index`: for each (query, key) patch pair, the row of its
  offset in the flattened [2·grid - 1, 2·grid - 1] offset table, [P, P]."""
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  rows, cols = rows.reshape(-1), cols.reshape(-1)
  return ((rows[:, None] - rows[None] + grid - 1) * (2 * grid - 1)
          + cols[:, None] - cols[None] + grid - 1)


class RelPosMlp(nn.Module):
  """timm `RelPosMlp` ('cr' mode): an MLP `mlp` (fc1 -> ReLU -> fc2) maps each offset's log
  coordinates to a per-head logit bias; the class token's rows and columns get none.
  () -> [1, heads, prefix + P, prefix + P] float32."""
  grid: int
  heads: int
  hidden: int
  prefix: int = 0

  @nn.compact
  def __call__(self) -> jax.Array:
    coords = jnp.asarray(relative_log_coords(self.grid).reshape(-1, 2))
    table = TimmMlp(self.hidden, nn.relu, jnp.float32, out_features=self.heads, name="mlp")(coords)
    bias = table[relative_position_index(self.grid)]  # [P, P, heads]
    p = self.prefix
    return jnp.pad(jnp.transpose(bias, (2, 0, 1)), ((0, 0), (p, 0), (p, 0)))[None]


class TimmAttention(nn.Module):
  """timm `Attention` / `AttentionRope` / `EvaAttention`: q, k, v (laid out by `qkv`),
  rotary embedding on the tokens after the `prefix` class token, softmax(q kᵀ / sqrt(Dh)) v,
  the optional sub-LN `norm`, then `proj`."""
  heads: int
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)
  qkv: str = "fused"  # TimmViTConfig.QKV_LAYOUTS
  qkv_bias: bool = True
  norm_eps: float | None = None
  prefix: int = 0
  rel_pos_mlp: int | None = None  # RelPosMlp's hidden width (then `grid` is the patch grid)
  grid: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None,
               rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """x: [N, L, W] -> [N, L, W]; `lengths` [N]: only the first lengths[i] tokens are keys
    (NaFlex padding), None = all; `rope`: (sin, cos) of the patch tokens, [P, Dh] or
    [N, P, Dh]."""
    n, length, width = x.shape
    shape = (n, length, self.heads, width // self.heads)
    if self.qkv == "split":  # EVA02: the key has no bias
      q, k, v = (_dense(width, self.dtype, f"{name}_proj", bias)(x).reshape(shape)
                 for name, bias in (("q", self.qkv_bias), ("k", False), ("v", self.qkv_bias)))
    else:
      qkv = _dense(3 * width, self.dtype, "qkv", self.qkv_bias and self.qkv == "fused")(x)
      if self.qkv == "eva" and self.qkv_bias:  # EVA01 / EVA02-E: a zero key bias between
        zeros = nn.initializers.zeros
        q_bias = self.param("q_bias", zeros, (width,), jnp.float32)
        v_bias = self.param("v_bias", zeros, (width,), jnp.float32)
        qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
      q, k, v = (t[:, :, 0] for t in jnp.split(qkv.reshape(n, length, 3, *shape[2:]), 3, 2))
    if rope is not None:
      p = self.prefix
      q = jnp.concatenate([q[:, :p], rotate_pairs(q[:, p:], *rope)], axis=1)
      k = jnp.concatenate([k[:, :p], rotate_pairs(k[:, p:], *rope)], axis=1)
    bias = None
    if self.rel_pos_mlp:
      bias = RelPosMlp(self.grid, self.heads, self.rel_pos_mlp, self.prefix,
                       name="rel_pos")().astype(q.dtype)
    out = dot_product_attention(q, k, v, self.attention, bias=bias,
                                key_value_seq_lengths=lengths).reshape(n, length, width)
    if self.norm_eps is not None:
      out = LayerNorm(self.dtype, self.norm_eps, name="norm")(out)
    return _dense(width, self.dtype, "proj")(out)


class TimmBlock(nn.Module):
  """Pre-norm `x + ls1(attn(norm1(x)))`, `x + ls2(mlp(norm2(x)))`, or post-norm
  `x + norm1(attn(x))`, `x + norm2(mlp(x))` (`cfg.post_norm`, EVA02-E)."""
  cfg: TimmViTConfig
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None,
               rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    c = self.cfg
    sub_ln = c.ln_eps if c.sub_ln else None
    attn = TimmAttention(c.heads, self.dtype, self.attention, c.qkv, c.qkv_bias, sub_ln,
                         c.prefix_tokens, c.rel_pos_mlp, c.grid, name="attn")
    mlp = TimmMlp(c.mlp_width, self.act, self.dtype, c.swiglu, sub_ln, name="mlp")
    norm1 = LayerNorm(self.dtype, c.ln_eps, name="norm1")
    norm2 = LayerNorm(self.dtype, c.ln_eps, name="norm2")
    if c.post_norm:
      x = x + norm1(attn(x, lengths, rope))
      return x + norm2(mlp(x))
    scale = ((lambda y, name: LayerScale(c.ls_init_value, name=name)(y))
             if c.ls_init_value is not None else (lambda y, name: y))
    x = x + scale(attn(norm1(x), lengths, rope), "ls1")
    return x + scale(mlp(norm2(x)), "ls2")


class MAPHead(nn.Module):
  """timm `AttentionPoolLatent` (one latent query, `q` projection, no qk-norm):
  [N, L, W] -> [N, W]."""
  heads: int
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  attention: str = "auto"
  ln_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    n, length, width = x.shape
    head_dim = width // self.heads
    latent = self.param("latent", nn.initializers.truncated_normal(width ** -0.5),
                        (1, 1, width))
    q = _dense(width, self.dtype, "q")(latent.astype(self.dtype))
    q = jnp.broadcast_to(q.reshape(1, 1, self.heads, head_dim), (n, 1, self.heads, head_dim))
    kv = _dense(2 * width, self.dtype, "kv")(x)
    k, v = jnp.split(kv.reshape(n, length, 2, self.heads, head_dim), 2, axis=2)
    pooled = dot_product_attention(q, k[:, :, 0], v[:, :, 0], self.attention,
                                   key_value_seq_lengths=lengths).reshape(n, 1, width)
    pooled = _dense(width, self.dtype, "proj")(pooled)
    pooled = pooled + TimmMlp(self.mlp_width, self.act, self.dtype, name="mlp")(
        LayerNorm(self.dtype, self.ln_eps, name="norm")(pooled))
    return pooled[:, 0]
