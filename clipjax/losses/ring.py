"""Row reductions against the keys of the whole mesh without gathering them: a ring exchange.

`exchange="all_gather"` (the default of every loss) gives each device all B keys at once, so
the loss phase holds (and back-propagates through) global-batch arrays. With
`exchange="ring"` each device holds only its own b rows of each side: the other side's shards
travel round the mesh's batch axes with `jax.lax.ppermute`, one hop per step for n steps, and
each device reduces against the shard it holds at that step in [block, block] tiles (query
rows tiled too, so no tile grows with the batch). The softmax form keeps running
log-sum-exp statistics per row; the sigmoid form a running sum. Labels travel with their rows.

- Forward, one direction (`ring_row_cross_entropy`, `ring_row_sigmoid_loss`): the key shards
  move; the statistics of this device's query rows stay.
- Forward, both directions of the symmetric cross-entropy (`ring_symmetric_cross_entropy`, CLIP
  / UniCL): one ring serves both, each tile read along its rows (this device's queries) and
  its columns (the moving keys, whose [b]-sized column statistics travel with them, as
  Inf-CL and open_clip's bidirectional SigLIP exchange do).
- Backward (a `custom_vjp`), two rings so that no gradient accumulator ever travels: the key
  shards go round for the queries' gradient (and the scale's and bias's), then the query shards
  with their row statistics for the keys' gradient. Each tile's logits are recomputed once per
  ring, and the gradients are written into their buffers in place.
- A moving shard whose tiles split evenly travels in two halves, one round the ring after the
  other (`_halves`): a device then holds its own rows, their gradients and one shard's worth of
  the moving side (the held and the arriving half), not two shards. At a 4,194,304 CLIP batch
  (D = 768) on 8 devices that is 7.6 GiB per device against 12.1 GiB with whole shards and
  67.5 GiB all-gathered (docs/scaling.md).

The next shard is sent before the current one is reduced, so the transfer can overlap the
compute (XLA runs collective-permutes asynchronously on GPU and TPU). Values and gradients
equal the all-gather path up to float32 summation order (tests/losses/test_ring.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from clipjax.losses.tiled import (
  HIGHEST,
  add_query_grads,
  _as_varying,
  _blocks,
  _full,
  ce_finish,
  ce_fold,
  ce_grad,
  ce_grad_of_logits,
  ce_init,
  ce_tile_step,
  cotangents,
  sigmoid_grad_of_logits,
  sigmoid_tile_step,
)
from clipjax.parallel.collectives import AxisName


def _ring(axis_name: AxisName):
  """(n, the permutation sending each device's shard to the next) over the named axes."""
  n = jax.lax.psum(1, axis_name)
  return n, [(i, (i + 1) % n) for i in range(n)]


def _shift(tree, axis_name, perm):
  return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), tree)


def _row_blocks(tree, block: int):
  return jax.tree.map(lambda x: _blocks(x, block), tree)


def _halves(rows: int, block: int) -> int:
  """How many pieces a moving shard of `rows` rows travels in: two halves, each going round the
  ring in turn, when the shard's tiles split evenly (a device then holds the held and the
  arriving half, one shard's worth, instead of two whole shards); else one piece."""
  return 2 if (rows // block) % 2 == 0 else 1


def _in_pieces(go_round, moving, state, block: int):
  """`go_round(piece, state) -> (piece, state)` for each piece of `moving` ([b, ...] leaves)
  in turn; the returned pieces are put back together."""
  pieces = _halves(jax.tree.leaves(moving)[0].shape[0], block)
  split = jax.tree.map(lambda x: x.reshape(pieces, -1, *x.shape[1:]), moving)
  state, back = jax.lax.scan(lambda state, piece: go_round(piece, state)[::-1], state, split)
  return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), back), state


def _rotate(visit, moving, state, block: int, axis_name: AxisName):
  """`state = visit(blocks of the held shard, state)` for each device's shard of `moving` (a
  tree of [b, ...] leaves) in turn: the shards go one hop round the ring per step, the next
  one sent before the held one is visited (in halves, `_halves`)."""
  n, perm = _ring(axis_name)

  def go_round(piece, state):
    def hop(carry, _):
      held, state = carry
      arriving = _shift(held, axis_name, perm)
      return (arriving, visit(_row_blocks(held, block), state)), None
    return jax.lax.scan(hop, (piece, state), None, length=n)[0]

  return _in_pieces(go_round, moving, state, block)[1]


def _ring_reduce(make_step, init, q, q_labels, k, k_labels, block: int, axis_name: AxisName):
  """Folds every device's keys into this device's per-row statistics `init` ([b] leaves) with
  the tile step `make_step(query block, its labels)`; the key shards move."""
  queries = (_blocks(q, block), _blocks(q_labels, block))
  stats = _rotate(lambda keys, stats: jax.lax.map(
      lambda a: jax.lax.scan(make_step(a[0], a[1]), a[2], keys)[0], (*queries, stats)),
                  (k, k_labels), _row_blocks(init, block), block, axis_name)
  return jax.tree.map(lambda x: x.reshape(-1), stats)


def _ring_backward(q, k, scale, bias, q_labels, k_labels, q_rows, k_rows, block, axis_name,
                   grad_of_logits):
  """Cotangents (q, k, scale, bias, labels) of a loss whose gradient with respect to a logits
  tile is `grad_of_logits(logits, q labels, k labels, q rows, k rows)`; `q_rows` / `k_rows`:
  per-row arrays of each side ([b] each: cotangents, log-sum-exps, target counts)."""
  def tile_grad(q_blk, k_blk, ql, kl, qr, kr):
    dots = jnp.dot(q_blk, k_blk.T, precision=HIGHEST)
    return dots, grad_of_logits(scale * dots + bias, ql, kl, qr, kr)

  def in_place(rows, blocks, *sums, update):
    """blocks[i], sums = update(rows[i], blocks[i], *sums) for every row block i, written into
    `blocks` itself (a scan from xs to ys would hold a second shard-sized gradient buffer)."""
    def body(i, acc):
      blocks, *sums = acc
      blk, *sums = update(jax.tree.map(lambda x: x[i], rows), blocks[i], *sums)
      return (blocks.at[i].set(blk), *sums)
    return jax.lax.fori_loop(0, blocks.shape[0], body, (blocks, *sums))

  def queries_side(keys, state):  # dq, dscale, dbias; the keys move with their rows
    def query_block(rows, *acc):
      q_blk, ql, qr = rows

      def tile(acc, blk):
        k_blk, kl, kr = blk
        dots, grad = tile_grad(q_blk, k_blk, ql, kl, qr, kr)
        return add_query_grads(acc, k_blk, scale, dots, grad), None

      return jax.lax.scan(tile, acc, keys)[0]

    return in_place(_row_blocks((q, q_labels, q_rows), block), *state, update=query_block)

  zero = _full((), 0.0, q)
  dq, dscale, dbias = _rotate(queries_side, (k, k_labels, k_rows),
                              (_blocks(jnp.zeros_like(q), block), zero, zero), block, axis_name)

  def keys_side(queries, dk):  # dk; the queries move with their rows
    def key_block(rows, dk_blk):
      k_blk, kl, kr = rows

      def tile(dk_blk, blk):
        q_blk, ql, qr = blk
        _, grad = tile_grad(q_blk, k_blk, ql, kl, qr, kr)
        return dk_blk + scale * jnp.dot(grad.T, q_blk, precision=HIGHEST), None

      return (jax.lax.scan(tile, dk_blk, queries)[0],)

    return in_place(_row_blocks((k, k_labels, k_rows), block), dk, update=key_block)[0]

  dk = _rotate(keys_side, (q, q_labels, q_rows), _blocks(jnp.zeros_like(k), block), block,
               axis_name)
  return cotangents(dq.reshape(q.shape), dk.reshape(k.shape), dscale, dbias, scale, bias)


# ---------------------------------------------------------------- one direction

def ring_row_cross_entropy(q, k, scale, bias, q_labels, k_labels, block: int,
                           axis_name: AxisName):
  """`tiled.tiled_row_cross_entropy` against the keys of every device: q [b, D], this device's
  keys k [b, D] and their labels [b] -> [b] (block divides b)."""
  return _ring_ce(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels, k_labels,
                  block, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _ring_ce(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return _ring_ce_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name)[0]


def _ring_ce_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  stats = _ring_reduce(lambda q_blk, ql: ce_tile_step(q_blk, scale, bias, ql), ce_init(q),
                       q, q_labels, k, k_labels, block, axis_name)
  loss, (lse, tcnt) = ce_finish(stats)
  return loss, (q, k, scale, bias, q_labels, k_labels, lse, tcnt)


def _ring_ce_bwd(block, axis_name, res, g):
  q, k, scale, bias, q_labels, k_labels, lse, tcnt = res

  def grad_of_logits(logits, ql, kl, qr, kr):
    del kr
    return ce_grad_of_logits(ql, *qr)(logits, kl)

  return _ring_backward(q, k, scale, bias, q_labels, k_labels, (g, lse, tcnt), (), block,
                        axis_name, grad_of_logits)


_ring_ce.defvjp(_ring_ce_fwd, _ring_ce_bwd)


def ring_row_sigmoid_loss(q, k, scale, bias, q_labels, k_labels, block: int,
                          axis_name: AxisName):
  """`tiled.tiled_row_sigmoid_loss` against the keys of every device (see
  `ring_row_cross_entropy`)."""
  return _ring_sigmoid(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels, k_labels,
                       block, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _ring_sigmoid(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return _ring_reduce(lambda q_blk, ql: sigmoid_tile_step(q_blk, scale, bias, ql),
                      _full((q.shape[0],), 0.0, q), q, q_labels, k, k_labels, block, axis_name)


def _ring_sigmoid_fwd(q, k, scale, bias, q_labels, k_labels, block, axis_name):
  return (_ring_sigmoid(q, k, scale, bias, q_labels, k_labels, block, axis_name),
          (q, k, scale, bias, q_labels, k_labels))


def _ring_sigmoid_bwd(block, axis_name, res, g):
  q, k, scale, bias, q_labels, k_labels = res

  def grad_of_logits(logits, ql, kl, qr, kr):
    del kr
    return sigmoid_grad_of_logits(qr[0], ql)(logits, kl)

  return _ring_backward(q, k, scale, bias, q_labels, k_labels, (g,), (), block, axis_name,
                        grad_of_logits)


_ring_sigmoid.defvjp(_ring_sigmoid_fwd, _ring_sigmoid_bwd)


# ---------------------------------------------------------------- both directions at once

def ring_symmetric_cross_entropy(q, k, scale, bias, labels, block: int, axis_name: AxisName):
  """(CE of each query row against every key, CE of each key row against every query), both
  [b], from one forward ring over the shared logits tiles (q and k are the two sides of the
  same samples, `labels` [b] theirs)."""
  return _ring_sym(q, k, _as_varying(scale, q), _as_varying(bias, q), labels, block, axis_name)


def _sym_forward(q, k, scale, bias, labels, block, axis_name):
  n, perm = _ring(axis_name)
  queries = (_blocks(q, block), _blocks(labels, block))
  flat = lambda stats: jax.tree.map(lambda x: x.reshape(-1), stats)

  def go_round(piece, row_stats):
    def hop(carry, _):
      (k_held, kl_held, col_stats), row_stats = carry
      col_stats = _row_blocks(col_stats, block)  # [tiles, block], as the tiles fold them
      arriving = _shift((k_held, kl_held), axis_name, perm)  # the column statistics follow
      keys = (_blocks(k_held, block), _blocks(kl_held, block))

      def query_block(col_stats, a):
        q_blk, ql, row_blk = a

        def tile(row, blk):
          k_blk, kl, col = blk
          logits = scale * jnp.dot(q_blk, k_blk.T, precision=HIGHEST) + bias
          match = ql[:, None] == kl[None, :]
          return ce_fold(row, logits, match, axis=1), ce_fold(col, logits, match, axis=0)

        row_blk, col_stats = jax.lax.scan(tile, row_blk, (*keys, col_stats))
        return col_stats, row_blk

      col_stats, row_stats = jax.lax.scan(query_block, col_stats, (*queries, row_stats))
      return ((*arriving, _shift(flat(col_stats), axis_name, perm)), row_stats), None

    # after n hops each piece, with its column statistics, is back on its own device
    return jax.lax.scan(hop, (piece, row_stats), None, length=n)[0]

  (_, _, col_stats), row_stats = _in_pieces(go_round, (k, labels, ce_init(k)),
                                             _row_blocks(ce_init(q), block), block)
  return ce_finish(flat(row_stats)), ce_finish(flat(col_stats))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _ring_sym(q, k, scale, bias, labels, block, axis_name):
  (rows, _), (cols, _) = _sym_forward(q, k, scale, bias, labels, block, axis_name)
  return rows, cols


def _ring_sym_fwd(q, k, scale, bias, labels, block, axis_name):
  (rows, row_res), (cols, col_res) = _sym_forward(q, k, scale, bias, labels, block, axis_name)
  return (rows, cols), (q, k, scale, bias, labels, row_res, col_res)


def _ring_sym_bwd(block, axis_name, res, g):
  q, k, scale, bias, labels, (row_lse, row_cnt), (col_lse, col_cnt) = res
  g_rows, g_cols = g

  def grad_of_logits(logits, ql, kl, qr, kr):  # both directions read the same tile
    match = ql[:, None] == kl[None, :]
    return (ce_grad(logits, qr[1], qr[0], qr[2], match, axis=1)
            + ce_grad(logits, kr[1], kr[0], kr[2], match, axis=0))

  cot = _ring_backward(q, k, scale, bias, labels, labels, (g_rows, row_lse, row_cnt),
                       (g_cols, col_lse, col_cnt), block, axis_name, grad_of_logits)
  return cot[:4] + (None,)


_ring_sym.defvjp(_ring_sym_fwd, _ring_sym_bwd)
