"""Row reductions against the keys of the whole mesh without gathering them: a ring exchange.

`exchange="all_gather"` (the default of every loss) gives each device all B keys at once, so
the loss phase holds (and back-propagates through) global-batch arrays. With
`exchange="ring"` each device holds only its own b keys: they travel round the mesh's batch
axes with `jax.lax.ppermute`, one hop per step for n steps, and each device reduces its query
rows against the key shard it holds at that step in [block, block] tiles (query rows tiled too,
so no tile grows with the batch). The softmax form keeps running log-sum-exp statistics per query row across the
steps; the sigmoid form a running sum.

The backward pass (a `custom_vjp`) runs the ring again: the key shard travels with its
gradient accumulator, every device adds the gradient its queries give to those keys, and after
n hops both are home. No device ever holds more than two key shards and one [b, block] tile.
Labels travel with their keys. The next shard is sent before the current one is reduced, so
the transfer can overlap the compute (XLA schedules collective-permutes asynchronously on GPU
and TPU).

Values and gradients equal the all-gather path up to float32 summation order
(tests/losses/test_ring.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from clipjax.losses.tiled import (
  _as_varying,
  _blocks,
  _full,
  ce_finish,
  ce_grad_of_logits,
  ce_init,
  ce_tile_step,
  cotangents,
  grad_init,
  grad_tile_step,
  sigmoid_grad_of_logits,
  sigmoid_tile_step,
)
from clipjax.parallel.collectives import AxisName

EXCHANGES = ("all_gather", "ring")


def _ring(axis_name: AxisName):
  """(n, the permutation sending each device's shard to the next) over the named axes."""
  n = jax.lax.psum(1, axis_name)
  return n, [(i, (i + 1) % n) for i in range(n)]


def _shift(tree, axis_name, perm):
  return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), tree)


def _row_blocks(tree, block: int):
  return jax.tree.map(lambda x: _blocks(x, block), tree)


def _ring_reduce(make_step, init, q, q_labels, k, k_labels, block: int, axis_name: AxisName):
  """Folds every device's keys into the per-row statistics `init` ([b] leaves) with the tile
  step `make_step(query block, its labels)`, in [block, block] tiles: the query rows are
  tiled too, so a tile's size never depends on the batch. The key shards move one hop per
  ring step (the next one sent before the current one is reduced)."""
  n, perm = _ring(axis_name)
  queries = (_blocks(q, block), _blocks(q_labels, block))

  def hop(carry, _):
    held, stats = carry
    arriving = _shift(held, axis_name, perm)
    keys = (_blocks(held[0], block), _blocks(held[1], block))
    stats = jax.lax.map(lambda a: jax.lax.scan(make_step(a[0], a[1]), a[2], keys)[0],
                        (*queries, stats))
    return (arriving, stats), None

  (_, stats), _ = jax.lax.scan(hop, ((k, k_labels), _row_blocks(init, block)), None, length=n)
  return jax.tree.map(lambda x: x.reshape(-1), stats)


def _ring_backward(q, k, scale, bias, q_labels, k_labels, rows, block, axis_name, make_grad):
  """Cotangents (q, k, scale, bias, labels) of a row loss whose gradient with respect to a
  logits tile is `make_grad(query labels, *rows of the block)(logits, key labels)` (`rows`:
  per-row arrays such as the cotangent g, [b] each). The key shards go round the ring with
  their gradient accumulators and arrive home with every device's share; tiles are
  [block, block] as in the forward pass."""
  n, perm = _ring(axis_name)
  queries = (_blocks(q, block), _blocks(q_labels, block), _row_blocks(rows, block))

  def hop(carry, _):
    (k_held, kl_held, dk_held), dq, sums = carry
    keys = (_blocks(k_held, block), _blocks(kl_held, block))

    def query_block(acc, a):
      dk, dscale, dbias = acc
      q_blk, ql_blk, row_blk, dq_blk = a
      step = grad_tile_step(q_blk, scale, bias, make_grad(ql_blk, *row_blk))
      (dq_blk, dscale, dbias), dk_blocks = jax.lax.scan(step, (dq_blk, dscale, dbias), keys)
      return (dk + dk_blocks.reshape(dk.shape), dscale, dbias), dq_blk

    (dk_held, *sums), dq = jax.lax.scan(query_block, (dk_held, *sums), (*queries, dq))
    moved = _shift((k_held, kl_held, dk_held), axis_name, perm)
    return (moved, dq, tuple(sums)), None

  _, dscale, dbias = grad_init(q)
  ((_, _, dk), dq, (dscale, dbias)), _ = jax.lax.scan(
      hop, ((k, k_labels, jnp.zeros_like(k)), _blocks(jnp.zeros_like(q), block),
            (dscale, dbias)), None, length=n)
  return cotangents(dq.reshape(q.shape), dk, dscale, dbias, scale, bias)


# ---------------------------------------------------------------- soft-target cross-entropy

def ring_row_cross_entropy(q, k, scale, bias, q_labels, k_labels, block: int,
                           axis_name: AxisName):
  """`tiled.tiled_row_cross_entropy` against the keys of every device: q [b, D], this device's
  keys k [b_k, D] and their labels [b_k] -> [b] (block divides b_k)."""
  return _ring_ce(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels, k_labels,
                  block, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _ring_ce(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return _ring_ce_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name)[0]


def _ring_ce_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  stats = _ring_reduce(lambda q_blk, ql_blk: ce_tile_step(q_blk, scale, bias, ql_blk),
                       ce_init(q), q, q_labels, k, k_labels, block, axis_name)
  loss, (lse, tcnt) = ce_finish(stats)
  return loss, (q, k, scale, bias, q_labels, k_labels, lse, tcnt)


def _ring_ce_bwd(block, axis_name, res, g):
  q, k, scale, bias, q_labels, k_labels, lse, tcnt = res
  return _ring_backward(q, k, scale, bias, q_labels, k_labels, (g, lse, tcnt), block,
                        axis_name, ce_grad_of_logits)


_ring_ce.defvjp(_ring_ce_fwd, _ring_ce_bwd)


# ---------------------------------------------------------------- pairwise sigmoid

def ring_row_sigmoid_loss(q, k, scale, bias, q_labels, k_labels, block: int,
                          axis_name: AxisName):
  """`tiled.tiled_row_sigmoid_loss` against the keys of every device (see
  `ring_row_cross_entropy`)."""
  return _ring_sigmoid(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels, k_labels,
                       block, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _ring_sigmoid(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return _ring_reduce(lambda q_blk, ql_blk: sigmoid_tile_step(q_blk, scale, bias, ql_blk),
                      _full((q.shape[0],), 0.0, q), q, q_labels, k, k_labels, block, axis_name)


def _ring_sigmoid_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return (_ring_sigmoid(q, k, scale, bias, q_labels, k_labels, block, axis_name),
          (q, k, scale, bias, q_labels, k_labels))


def _ring_sigmoid_bwd(block, axis_name, res, g):
  q, k, scale, bias, q_labels, k_labels = res
  return _ring_backward(q, k, scale, bias, q_labels, k_labels, (g,), block, axis_name,
                        lambda ql_blk, g_blk: sigmoid_grad_of_logits(g_blk, ql_blk))


_ring_sigmoid.defvjp(_ring_sigmoid_fwd, _ring_sigmoid_bwd)
