"""OpenCLIP text tower: token + positional embedding, pre-LN blocks, ln_final, pooling,
projection.

CLIP towers are causal, pool the end-of-text token (argmax of the ids, open_clip's
`text_pool_type='argmax'`) and project with a matrix `text_projection`. SigLIP towers are
bidirectional, pool the `last` position, project with a Linear (`text_projection/kernel`,
`bias`) or not at all, use LayerNorm eps 1e-6 and (SigLIP 2) tanh GELU: `TextConfig` says which.

`TextTransformer` holds these parameters under its own name (a third, dialogue tower, a
CustomTextCLIP's `text`, or a standalone text encoder); `CLIP` attaches the same layers at its
top level via `attach_text_tower`, so its parameter paths are open_clip's (`token_embedding`,
`transformer/resblocks_0/...`, `ln_final`, `text_projection`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.models.configs import TextConfig
from clipjax.models.layers import (
  Dtype,
  LayerNorm,
  Transformer,
  exact_gelu,
  quick_gelu,
  tanh_gelu,
)


def attach_text_tower(module: nn.Module, cfg: TextConfig, embed_dim: int, use_quick_gelu: bool,
                      dtype: Dtype, remat: bool | str, attention: str = "auto",
                      scan: bool = False) -> None:
  """Creates the text-tower submodules and params on `module` (call from its `setup`)."""
  module.token_embedding = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=
                                    nn.initializers.normal(0.02), name="token_embedding")
  module.positional_embedding = module.param(
      "positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, cfg.width))
  act = tanh_gelu if cfg.gelu_tanh else quick_gelu if use_quick_gelu else exact_gelu
  module.transformer = Transformer(cfg.layers, cfg.heads, cfg.mlp_width, act, causal=cfg.causal,
                                   dtype=dtype, remat=remat, openclip_init=True,
                                   ln_eps=cfg.ln_eps, attention=attention, scan=scan,
                                   ls_init_value=cfg.ls_init_value, name="transformer")
  module.ln_final = LayerNorm(jnp.float32, cfg.ln_eps, name="ln_final")
  init = nn.initializers.normal(cfg.width ** -0.5)
  if cfg.proj_type == "none":
    if cfg.width != embed_dim:
      raise ValueError(f"text proj_type 'none' needs text width {cfg.width} == embed_dim "
                       f"{embed_dim}")
    module.text_projection = None
  elif cfg.proj_bias:
    module.text_projection = nn.Dense(embed_dim, kernel_init=init, name="text_projection")
  else:
    module.text_projection = module.param("text_projection", init, (cfg.width, embed_dim))


def run_text_tower(module: nn.Module, ids: jax.Array, cfg: TextConfig, dtype: Dtype) -> jax.Array:
  """ids: int [N, L] with L <= context_length -> [N, embed_dim] (not L2-normalised)."""
  if ids.ndim != 2 or ids.shape[1] > cfg.context_length:
    raise ValueError(f"text tower expects token ids of shape [N, L<={cfg.context_length}], "
                     f"got {ids.shape}")
  if not cfg.trimmable and ids.shape[1] != cfg.context_length:
    raise ValueError(f"this bidirectional text tower reads every padding position: pass ids "
                     f"padded to the context length, [N, {cfg.context_length}], got {ids.shape}")
  length = ids.shape[1]
  x = module.token_embedding(ids).astype(dtype)
  x = x + module.positional_embedding[:length].astype(dtype)
  x = module.transformer(x)
  x = module.ln_final(x)
  if cfg.pool_type in ("last", "first"):
    pooled = x[:, -1 if cfg.pool_type == "last" else 0]
  else:
    # argmax: the end-of-text id 49407 is the largest in the CLIP vocabulary; eos: the first
    # `eos_id` (position 0 when a row has none, as open_clip)
    index = jnp.argmax(ids if cfg.pool_type == "argmax" else ids == cfg.eos_id, axis=-1)
    pooled = jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
  if module.text_projection is None:
    return pooled.astype(jnp.float32)
  if isinstance(module.text_projection, nn.Dense):
    return module.text_projection(pooled)
  return jnp.dot(pooled, module.text_projection, precision=jax.lax.Precision.HIGHEST)


def trim_padding(ids: np.ndarray, multiple: int = 8, pad_id: int = 0) -> np.ndarray:
  """Drops the padding columns after the batch's last real token.

  Exact for causal CLIP towers (they read the end-of-text token, the last non-padding id) and
  HF towers (they mask padding out of attention and pooling); never used for bidirectional
  towers that read the padding (`TextConfig.trimmable`).
  Lengths are rounded up to a bucket (`padded_length`) so a jitted encoder compiles only a
  few shapes. ids: int [N, L] (host array); `pad_id`: the tokenizer's padding id (0 for the
  CLIP BPE).
  """
  ids = np.asarray(ids)
  return ids if ids.size == 0 else ids[:, :padded_length(ids, multiple, pad_id)]


def padded_length(ids: np.ndarray, multiple: int = 8, pad_id: int = 0) -> int:
  """Columns `trim_padding` keeps: through the batch's last non-padding token, rounded up to
  the next of multiple x (1, 2, 3, 4, 6, 8, 12, 16, ...), at most the full width.

  Past 2 x multiple each bucket is at most 1.5x the one below, so at most a third of the kept
  columns are padding there, while a context of L compiles ~2 log2(L / multiple) shapes
  (7 for 77, 10 for 248) rather than L / multiple (a new shape is a new compilation).
  """
  real = np.asarray(ids) != pad_id
  needed = (real.shape[1] - int(real[:, ::-1].argmax(axis=1)[real.any(axis=1)].min())
            if real.any() else 1)
  factor = 1
  while factor * multiple < needed:  # 1, 2, 3, 4, 6, 8, 12, ...: powers of two and 1.5x them
    factor = 2 if factor == 1 else factor * 3 // 2 if factor & (factor - 1) == 0 else factor * 4 // 3
  return min(ids.shape[1], factor * multiple)


class TextTransformer(nn.Module):
  cfg: TextConfig
  embed_dim: int
  quick_gelu: bool = False
  dtype: Dtype = jnp.float32
  remat: bool | str = False
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)
  scan: bool = False  # blocks under nn.scan (layers.layer_stack)

  def setup(self):
    attach_text_tower(self, self.cfg, self.embed_dim, self.quick_gelu, self.dtype, self.remat,
                      self.attention, self.scan)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return run_text_tower(self, ids, self.cfg, self.dtype)
