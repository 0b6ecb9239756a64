"""SigLIP 2 NaFlex inputs: images at their own aspect ratio, as a variable number of patches.

A NaFlex batch is a dict with transformers' names (what `Siglip2ImageProcessor` returns and
`clipjax.data.naflex` writes):

- `pixel_values` float [N, L, P·P·3]: each image's patches in row-major grid order, each patch
  flattened (row, column, channel), normalised; rows past the image's patch count are padding;
- `pixel_attention_mask` int/bool [N, L]: 1 for the image's patches, then 0 for the padding;
- `spatial_shapes` int [N, 2]: the image's patch grid (rows, columns), rows · columns ≤ L.

Padding is always trailing, so attention masks it by length (`key_value_seq_lengths`), which the
XLA and cuDNN kernels both take.
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.layers import Dtype

NAFLEX_KEYS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")


def check_naflex_batch(batch, patch_size: int, tower: str) -> None:
  """Raises a ValueError naming what a NaFlex batch must hold and what it got."""
  if not isinstance(batch, Mapping) or set(NAFLEX_KEYS) - set(batch):
    got = sorted(batch) if isinstance(batch, Mapping) else f"an array {getattr(batch, 'shape', '')}"
    raise ValueError(f"{tower} is a NaFlex tower: it takes a dict with {list(NAFLEX_KEYS)} "
                     f"(transformers' Siglip2ImageProcessor output), got {got}")
  pixels, mask, shapes = (batch[k] for k in NAFLEX_KEYS)
  n, length = mask.shape[:2] if mask.ndim == 2 else (None, None)
  want = (n, length, patch_size * patch_size * 3)
  if mask.ndim != 2 or pixels.shape != want or shapes.shape != (n, 2):
    raise ValueError(f"{tower}: NaFlex batch shapes must be pixel_values [N, L, {want[2]}], "
                     f"pixel_attention_mask [N, L], spatial_shapes [N, 2]; got "
                     f"{pixels.shape}, {mask.shape}, {shapes.shape}")


def axis_weights(index: jax.Array, size: jax.Array, grid: int) -> jax.Array:
  """Weights of a `grid`-long axis resized to `size` at output `index` ([...] each), as
  `F.interpolate(mode="bilinear", align_corners=False, antialias=True)` computes them: a
  triangle filter centred on (index + 0.5) · grid/size − 0.5, widened to grid/size when
  shrinking, normalised to sum 1. Returns [..., grid] float32."""
  scale = grid / size.astype(jnp.float32)
  support = jnp.maximum(scale, 1.0)
  center = (index.astype(jnp.float32) + 0.5) * scale - 0.5
  source = jnp.arange(grid, dtype=jnp.float32)
  w = jnp.maximum(1.0 - jnp.abs(source - center[..., None]) / support[..., None], 0.0)
  return w / w.sum(-1, keepdims=True)


def resized_positions(table: jax.Array, spatial_shapes: jax.Array, length: int) -> jax.Array:
  """The learned [G, G, W] position table resized to each image's patch grid and laid out as
  its patch sequence: [N, length, W] float32. Position p < rows·cols is grid cell
  (p // cols, p % cols); padding positions take cell (0, 0) (they are masked anyway)."""
  grid = table.shape[0]
  spatial_shapes = jnp.maximum(spatial_shapes, 1)  # an all-padding row (batch filler): no NaN
  rows, cols = spatial_shapes[:, :1], spatial_shapes[:, 1:]  # [N, 1] each
  p = jnp.arange(length)[None, :]
  valid = p < rows * cols
  r = jnp.where(valid, p // cols, 0)
  c = jnp.where(valid, p % cols, 0)
  wr = axis_weights(r, jnp.broadcast_to(rows, r.shape), grid)  # [N, L, G]
  wc = axis_weights(c, jnp.broadcast_to(cols, c.shape), grid)
  return jnp.einsum("nlg,nlh,ghw->nlw", wr, wc, table.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


class NaFlexEmbeds(nn.Module):
  """timm `NaFlexEmbeds` for SigLIP 2: a Linear `proj` (with bias) on the flattened patches plus
  the `pos_embed` table [1, G, G, W] resized per image. [N, L, P·P·3] -> [N, L, W]."""
  width: int
  grid: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array, spatial_shapes: jax.Array) -> jax.Array:
    x = nn.Dense(self.width, dtype=self.dtype, kernel_init=nn.initializers.lecun_normal(),
                 name="proj")(pixels.astype(self.dtype))
    table = self.param("pos_embed", nn.initializers.normal(0.02),
                       (1, self.grid, self.grid, self.width))
    return x + resized_positions(table[0], spatial_shapes, pixels.shape[1]).astype(x.dtype)


def example_images(vision, n: int = 1):
  """Zero inputs of the shape a tower takes (to initialise or trace it): [n, S, S, 3] float32,
  or for a NaFlex trunk a full `max_num_patches` batch of the position table's aspect."""
  if not vision.naflex:
    return jnp.zeros((n, vision.image_size, vision.image_size, 3), jnp.float32)
  length = vision.max_num_patches
  side = max(1, int(length ** 0.5))
  return {"pixel_values": jnp.zeros((n, length, vision.patch_size ** 2 * 3), jnp.float32),
          "pixel_attention_mask": (jnp.arange(length) < side * side).astype(jnp.int32)[None]
                                  .repeat(n, 0),
          "spatial_shapes": jnp.full((n, 2), side, jnp.int32)}
