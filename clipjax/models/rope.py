"""Axial 2-D rotary position embedding of EVA02 and the Perception Encoder (timm's
`RotaryEmbeddingCat` with `in_pixels=False`, applied by `apply_rot_embed_cat`).

Each head's D channels are split in two halves, one per image axis; within a half, channel
pair (2i, 2i+1) is rotated by the angle `position · temperature^(-i / (D/4))`. Positions are
patch indices plus `offset`, rescaled to a reference grid (`position / grid · ref_grid`, EVA's
fine-tuning rule), and the first half follows the row axis ("ij") or the column axis ("xy",
PE). The tables are constants of the architecture, computed once in float32 like timm's
buffers, and never parameters.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_tables(grid: int, head_dim: int, ref_grid: int | None = None, offset: float = 0.0,
                xy: bool = False, temperature: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """(sin, cos), each [grid², head_dim] float32, in the patches' row-major order; every angle
  appears twice in a row (the interleaved layout `rotate_pairs` expects)."""
  if head_dim % 4:
    raise ValueError(f"2-D rotary embedding needs a head dim divisible by 4, got {head_dim}")
  bands = head_dim // 4
  freqs = np.float32(1.0) / np.float32(temperature) ** (
      np.arange(bands, dtype=np.float32) / np.float32(bands))
  t = np.arange(grid, dtype=np.float32) + np.float32(offset)
  if ref_grid is not None:
    t = t / np.float32(grid) * np.float32(ref_grid)
  rows, cols = np.meshgrid(t, t, indexing="ij")  # [grid, grid]: a patch's row and column
  first, second = (cols, rows) if xy else (rows, cols)
  coords = np.stack([first, second], axis=-1).reshape(grid * grid, 2)
  angles = (coords[:, :, None] * freqs).reshape(grid * grid, 2 * bands)  # [P, D/2]
  angles = np.repeat(angles, 2, axis=-1)  # [P, D]: each angle for one channel pair
  return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def rotate_pairs(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """x [N, L, H, D] rotated pairwise: (a, b) -> (a cos − b sin, b cos + a sin), with sin / cos
  [L, D] or per image [N, L, D]. Computed in float32 and returned in x's dtype (timm rotates
  with float32 tables before casting back)."""
  x32 = x.astype(jnp.float32)
  pairs = x32.reshape(*x.shape[:-1], -1, 2)
  swapped = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  if sin.ndim == 2:
    sin, cos = sin[None], cos[None]
  sin, cos = sin[:, :, None, :], cos[:, :, None, :]  # broadcast over heads
  return (x32 * cos + swapped * sin).astype(x.dtype)
