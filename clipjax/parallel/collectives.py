"""Collectives that are no-ops without a mesh axis.

Losses call these with `axis_name=None` on one device (inputs are the whole global batch) and
with the mesh's batch axes inside `shard_map` (inputs are this device's shard); the same code
computes the same global quantity either way.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import jax
import jax.numpy as jnp

AxisName = Hashable | Sequence[Hashable] | None


def all_gather(x: jax.Array, axis_name: AxisName) -> jax.Array:
  """Concatenates the shards of x along dim 0 over the axis ([b, ...] -> [B, ...]).

  Differentiable: the transpose is a reduce-scatter, so each shard receives the gradient
  summed over every device that used it.
  """
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def psum(x, axis_name: AxisName):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def shard_offset(local_size: int, axis_name: AxisName) -> jax.Array:
  """Global index of this shard's first row."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * local_size
