"""OpenCLIP text tower: token + positional embedding, causal pre-LN blocks, ln_final,
end-of-text pooling (argmax of the ids, as open_clip's `text_pool_type='argmax'`),
`@ text_projection`.

`TextTransformer` holds these parameters under its own name (a third, dialogue tower or a
standalone text encoder); `CLIP` attaches the same layers at its top level via
`attach_text_tower`, so its parameter paths are open_clip's (`token_embedding`,
`transformer/resblocks_0/...`, `ln_final`, `text_projection`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.models.layers import Dtype, LayerNorm, Transformer, exact_gelu, quick_gelu
from clipjax.models.registry import TextConfig


def attach_text_tower(module: nn.Module, cfg: TextConfig, embed_dim: int, use_quick_gelu: bool,
                      dtype: Dtype, remat: bool) -> None:
  """Creates the text-tower submodules and params on `module` (call from its `setup`)."""
  module.token_embedding = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=
                                    nn.initializers.normal(0.02), name="token_embedding")
  module.positional_embedding = module.param(
      "positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, cfg.width))
  module.transformer = Transformer(cfg.layers, cfg.heads, cfg.mlp_width,
                                   quick_gelu if use_quick_gelu else exact_gelu, causal=True,
                                   dtype=dtype, remat=remat, openclip_init=True,
                                   name="transformer")
  module.ln_final = LayerNorm(jnp.float32, name="ln_final")
  module.text_projection = module.param(
      "text_projection", nn.initializers.normal(cfg.width ** -0.5), (cfg.width, embed_dim))


def run_text_tower(module: nn.Module, ids: jax.Array, cfg: TextConfig, dtype: Dtype) -> jax.Array:
  """ids: int [N, L] with L <= context_length -> [N, embed_dim] (not L2-normalised)."""
  if ids.ndim != 2 or ids.shape[1] > cfg.context_length:
    raise ValueError(f"text tower expects token ids of shape [N, L<={cfg.context_length}], "
                     f"got {ids.shape}")
  length = ids.shape[1]
  x = module.token_embedding(ids).astype(dtype)
  x = x + module.positional_embedding[:length].astype(dtype)
  x = module.transformer(x)
  x = module.ln_final(x)
  eot = jnp.argmax(ids, axis=-1)  # the end-of-text id 49407 is the largest in the vocabulary
  pooled = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
  return jnp.dot(pooled, module.text_projection, precision=jax.lax.Precision.HIGHEST)


def trim_padding(ids: np.ndarray, multiple: int = 8, pad_id: int = 0) -> np.ndarray:
  """Drops the padding columns after the batch's last real token.

  Exact for every clipjax text tower: the CLIP towers are causal and read the end-of-text
  token (the last non-padding id), the HF towers mask padding out of attention and pooling.
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
  remat: bool = False

  def setup(self):
    attach_text_tower(self, self.cfg, self.embed_dim, self.quick_gelu, self.dtype, self.remat)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return run_text_tower(self, ids, self.cfg, self.dtype)
