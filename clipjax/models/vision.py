"""OpenCLIP VisionTransformer: conv patchify, class token, positional embedding, ln_pre,
pre-LN blocks (optionally with layer scale), [CoCa's attentional pooler], ln_post, class-token
or mean pooling, `@ proj`."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import VisionConfig
from clipjax.models.layers import (
  Dtype,
  LayerNorm,
  Transformer,
  check_images,
  drop_patches,
  exact_gelu,
  quick_gelu,
)


class AttentionalPooler(nn.Module):
  """open_clip's `AttentionalPooler`: learned queries `query` [Q, dim] (LayerNorm `ln_q`)
  attend over the LayerNorm'd (`ln_k`) tokens through torch's MultiheadAttention `attn`, whose
  input projections are one `in_proj_weight` when the token width equals `dim`, else
  `q_proj_weight` / `k_proj_weight` / `v_proj_weight` (kept in torch's [out, in] layout).
  [N, L, C] -> [N, Q, dim]."""
  dim: int
  heads: int
  queries: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, length, width = x.shape
    d = self.dim
    query = self.param("query", nn.initializers.normal(1.0), (self.queries, d))
    x = LayerNorm(self.dtype, name="ln_k")(x)
    q = LayerNorm(self.dtype, name="ln_q")(query)
    attn = _PoolerAttention(d, self.heads, width, self.dtype, name="attn")
    return attn(jnp.broadcast_to(q.astype(x.dtype), (n, self.queries, d)), x)


class _PoolerAttention(nn.Module):
  """torch MultiheadAttention(dim, heads, kdim=vdim=context) on [N, Q, dim] queries and
  [N, L, context] keys / values."""
  dim: int
  heads: int
  context: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q: jax.Array, kv: jax.Array) -> jax.Array:
    d, init = self.dim, nn.initializers.xavier_uniform()
    if self.context == d:
      w_q, w_k, w_v = jnp.split(self.param("in_proj_weight", init, (3 * d, d)), 3)
    else:
      w_q = self.param("q_proj_weight", init, (d, d))
      w_k = self.param("k_proj_weight", init, (d, self.context))
      w_v = self.param("v_proj_weight", init, (d, self.context))
    b_q, b_k, b_v = jnp.split(self.param("in_proj_bias", nn.initializers.zeros, (3 * d,)), 3)
    project = lambda t, w, b: (t @ w.T.astype(self.dtype) + b.astype(self.dtype)).reshape(
        *t.shape[:2], self.heads, d // self.heads)
    out = jax.nn.dot_product_attention(project(q, w_q, b_q), project(kv, w_k, b_k),
                                       project(kv, w_v, b_v))
    return nn.Dense(d, dtype=self.dtype, name="out_proj")(out.reshape(*q.shape[:2], d))


class VisionTransformer(nn.Module):
  cfg: VisionConfig
  embed_dim: int
  quick_gelu: bool = False
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)
  scan: bool = False  # blocks under nn.scan (layers.layer_stack)
  # Fraction of patch tokens dropped per image (`layers.drop_patches`) when the module is
  # applied with a "patch_dropout" rng, i.e. in training; without it nothing is dropped.
  patch_dropout: float = 0.0

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: [N, H, W, 3] normalised pixels -> [N, embed_dim] (not L2-normalised)."""
    cfg = self.cfg
    check_images(images, cfg.image_size, "VisionTransformer")
    scale = cfg.width ** -0.5
    x = nn.Conv(cfg.width, (cfg.patch_size,) * 2, strides=(cfg.patch_size,) * 2, padding="VALID",
                use_bias=False, dtype=self.dtype, name="conv1")(images.astype(self.dtype))
    n = x.shape[0]
    x = x.reshape(n, -1, cfg.width)  # row-major over the grid, as torch's flatten of [W, gh, gw]
    cls = self.param("class_embedding", nn.initializers.normal(scale), (cfg.width,))
    pos = self.param("positional_embedding", nn.initializers.normal(scale),
                     (cfg.grid ** 2 + 1, cfg.width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, cfg.width)), x], axis=1)
    x = x + pos.astype(x.dtype)
    if self.patch_dropout and self.has_rng("patch_dropout"):
      x = drop_patches(x, self.patch_dropout, self.make_rng("patch_dropout"), prefix=1)
    if not cfg.no_ln_pre:
      x = LayerNorm(self.dtype, name="ln_pre")(x)
    x = Transformer(cfg.layers, cfg.heads, cfg.mlp_width, quick_gelu if self.quick_gelu
                    else exact_gelu, dtype=self.dtype, remat=self.remat,
                    attention=self.attention, scan=self.scan,
                    ls_init_value=cfg.ls_init_value, name="transformer")(x)
    width = cfg.width
    if cfg.attentional_pool:  # CoCa: the queries' outputs, pooled below as the tokens are
      x = AttentionalPooler(self.embed_dim, cfg.attn_pooler_heads, cfg.attn_pooler_queries,
                            self.dtype, name="attn_pool")(x)
      width = self.embed_dim
    ln_post = LayerNorm(jnp.float32, name="ln_post")
    if cfg.pool_type == "tok":  # LayerNorm acts per token: before or after pooling is the same
      pooled = ln_post(x[:, 0])
    elif cfg.final_ln_after_pool and not cfg.attentional_pool:
      pooled = ln_post(jnp.mean(x[:, 1:].astype(jnp.float32), axis=1))
    else:
      pooled = jnp.mean(ln_post(x[:, 1:]), axis=1)
    proj = self.param("proj", nn.initializers.normal(scale), (width, self.embed_dim))
    return jnp.dot(pooled, proj, precision=jax.lax.Precision.HIGHEST)
