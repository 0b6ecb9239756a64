"""DRAFT's MMD over the global batch with the image keys sent round the ring (`losses.ring`)
instead of all-gathered: each device pairs its own caption / dialogue rows with every
device's image rows as the shards pass.

- `rff` (`ring_rff_difference`): the Fourier-feature sums Σ_ij φ(S_ij) − Σ_ij φ(D_ij) of this
  device's rows, folded over the passing key shards in [block, block] tiles; a `custom_vjp`
  whose backward is the two-ring backward of the contrastive losses (`ring._ring_backward`),
  once for the caption rows and once for the dialogue rows, the gradient of a tile being an
  elementwise function of its similarities. Memory: this device's rows, their gradients and
  one [b, D] moving shard, whatever the global batch.
- `full` (`ring_similarities`, `ring_pair_sum`): the exact O(B⁴) V-statistic for small batches
  and tests; this device's [b, B] entries are built as the keys pass, then the entry vectors of
  the other devices pass by for the pair sums. Differentiated by JAX through the ring (the
  residuals are the global entries, as on the all-gather path).

σ₀ needs no ring: its statistics are [D] and [D, D] sums psum-reduced (`mmd.bandwidths`), and
the subsample estimator collects only its m sampled keys (`mmd._subsample_mmd2`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from clipjax.losses.ring import _ring, _ring_backward, _rotate, _shift
from clipjax.losses.tiled import (
  HIGHEST,
  _as_varying,
  _blocks,
  _full,
  rff_grad_of_sims,
  rff_tile_sum,
)
from clipjax.parallel.collectives import AxisName


def ring_rff_difference(s_q, d_q, k, scale, omega, phase, per_kernel: int, block: int,
                        axis_name: AxisName):
  """Σ_{i,j} φ(scale s_q_i·k_j) − Σ_{i,j} φ(scale d_q_i·k_j) over this device's rows i and the
  keys j of every device -> [F] (psum it for the global sums). s_q, d_q, k: [b, D] float32
  (block divides b); omega, phase: [F] features (`mmd.rff_features`, no gradient)."""
  return _ring_rff(s_q, d_q, k, _as_varying(scale, s_q), omega, phase, per_kernel, block,
                   axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _ring_rff(s_q, d_q, k, scale, omega, phase, per_kernel, block, axis_name):
  def visit(keys, acc):  # this device's query tiles against the held shard's key tiles
    def query_block(acc, rows):
      def tile(acc, k_blk):
        sims = lambda q: scale * jnp.dot(q, k_blk.T, precision=HIGHEST)
        return acc + (rff_tile_sum(sims(rows[0]), omega, phase, per_kernel)
                      - rff_tile_sum(sims(rows[1]), omega, phase, per_kernel)), None
      return jax.lax.scan(tile, acc, keys)[0], None
    return jax.lax.scan(query_block, acc, (_blocks(s_q, block), _blocks(d_q, block)))[0]

  return _rotate(visit, k, _full(omega.shape, 0.0, s_q), block, axis_name)


def _ring_rff_fwd(s_q, d_q, k, scale, omega, phase, per_kernel, block, axis_name):
  return (_ring_rff(s_q, d_q, k, scale, omega, phase, per_kernel, block, axis_name),
          (s_q, d_q, k, scale, omega, phase))


def _ring_rff_bwd(per_kernel, block, axis_name, res, g):
  s_q, d_q, k, scale, omega, phase = res
  unlabelled = jnp.zeros_like(k[:, 0], jnp.int32)  # varying like the rows

  def backward(q, sign):
    """(dq, dk, dscale) of ±Σ φ(scale q·k) (caption rows count +, dialogue rows −). One
    backward per side rather than one of their concatenation: the moving query shard and the
    gradient buffers stay [b, D], as in the contrastive losses' rings, and no [2b, D] copy of
    the rows or of their gradient is made."""
    def grad_of_logits(sims, ql, kl, qr, kr):
      del ql, kl, qr, kr
      return sign * rff_grad_of_sims(sims, g, omega, phase, per_kernel)
    dq, dk, dscale, _, _, _ = _ring_backward(q, k, scale, _full((), 0.0, q), unlabelled,
                                             unlabelled, (), (), block, axis_name,
                                             grad_of_logits)
    return dq, dk, dscale

  ds_q, dk_s, dscale_s = backward(s_q, 1.0)
  dd_q, dk_d, dscale_d = backward(d_q, -1.0)
  # ω and b are random draws, not parameters: no gradient flows to them.
  return ds_q, dd_q, dk_s + dk_d, dscale_s + dscale_d, None, None


_ring_rff.defvjp(_ring_rff_fwd, _ring_rff_bwd)


def ring_similarities(q, k, scale, axis_name: AxisName) -> jax.Array:
  """scale · q kᵀ against the keys of every device: q, k [b, D] -> [n, b, b], one [b, b] block
  per key shard in ring order (the MMD's V-statistic does not depend on the order)."""
  n, perm = _ring(axis_name)

  def hop(held, _):
    return _shift(held, axis_name, perm), scale * jnp.dot(q, held.T, precision=HIGHEST)

  return jax.lax.scan(hop, k, None, length=n)[1]


def ring_pair_sum(u, v, kernel, axis_name: AxisName):
  """Σ_i Σ_j kernel(u_i, v_j) over this device's u [m] and every device's v [m]: the v
  vectors pass round the ring."""
  n, perm = _ring(axis_name)

  def hop(carry, _):
    held, total = carry
    return (_shift(held, axis_name, perm), total + kernel(u[:, None], held[None, :]).sum()), None

  return jax.lax.scan(hop, (v, _full((), 0.0, u)), None, length=n)[0][1]
