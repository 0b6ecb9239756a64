"""Blockwise (tiled) reductions over a query-shard x all-keys similarity matrix.

`S = scale * Q Kᵀ (+ bias)` is [b, B] for b local queries and B keys (the global batch). The
functions here never hold more than a [b, block] tile of it: the forward pass streams over
column blocks keeping running sums (a running log-sum-exp for cross-entropy), and a
`custom_vjp` backward recomputes each tile from the saved per-row statistics. Values and
gradients equal the dense computation up to float32 rounding.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from clipjax.losses.fastmath import cos_sin

HIGHEST = jax.lax.Precision.HIGHEST


def pick_block(n: int, block: int) -> int:
  """The largest divisor of n that is <= block (so blocks tile the keys exactly)."""
  block = max(1, min(block, n))
  while n % block:
    block -= 1
  return block


def _blocks(x: jax.Array, block: int) -> jax.Array:
  return x.reshape(x.shape[0] // block, block, *x.shape[1:])


def _full(shape, value, ref):
  """A float32 constant that varies over the same shard_map axes as `ref` (scan carries must
  keep their type; `full_like` of a shard-local value inherits its varying axes)."""
  return jnp.broadcast_to(jnp.full_like(ref.reshape(-1)[0], value, jnp.float32), shape)


def _tile_logits(q, k_blk, scale, bias):
  return scale * jnp.dot(q, k_blk.T, precision=HIGHEST) + bias


# ---------------------------------------------------------------- soft-target cross-entropy

def _as_varying(x, ref):
  """Under shard_map, a replicated scalar entering a custom_vjp together with shard-local
  arrays must vary like them; the implicit cast transposes to a psum of its gradient."""
  return x + _full((), 0.0, ref)


def tiled_row_cross_entropy(q, k, scale, bias, q_labels, k_labels, block: int):
  """Per-row cross-entropy of softmax(scale q kᵀ + bias) against targets uniform over the keys
  whose label equals the row's label. q: [b, D], k: [B, D], labels int [b] / [B] -> [b]."""
  return _tiled_row_ce(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels, k_labels,
                       block)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _tiled_row_ce(q, k, scale, bias, q_labels, k_labels, block: int):
  return _row_ce_forward(q, k, scale, bias, q_labels, k_labels, block)[0]


def ce_fold(stats, logits, match, axis: int = 1):
  """Folds a logits tile into the running (max, Σ exp, Σ target logits, target count) of the
  soft-target cross-entropy of its rows (axis=1) or of its columns (axis=0); `match`: the
  tile's target mask."""
  m, s, tsum, tcnt = stats
  m_new = jnp.maximum(m, logits.max(axis=axis))
  expand = (lambda x: x[:, None]) if axis == 1 else (lambda x: x[None, :])
  s = s * jnp.exp(m - m_new) + jnp.exp(logits - expand(m_new)).sum(axis=axis)
  return (m_new, s, tsum + jnp.where(match, logits, 0.0).sum(axis=axis),
          tcnt + match.sum(axis=axis).astype(jnp.float32))


def ce_tile_step(q, scale, bias, q_labels):
  """The scan step folding one (keys, key labels) block into the running per-row statistics
  of the soft-target cross-entropy (`ce_fold`)."""
  def step(stats, blk):
    k_blk, kl_blk = blk
    return ce_fold(stats, _tile_logits(q, k_blk, scale, bias),
                   q_labels[:, None] == kl_blk[None, :]), None
  return step


def ce_init(q):
  b = q.shape[0]
  return (_full((b,), -jnp.inf, q), _full((b,), 0.0, q), _full((b,), 0.0, q),
          _full((b,), 0.0, q))


def ce_finish(stats):
  """(per-row loss, (log-sum-exp, target count)) from the statistics of every key."""
  m, s, tsum, tcnt = stats
  lse = m + jnp.log(s)
  return lse - tsum / tcnt, (lse, tcnt)


def _row_ce_forward(q, k, scale, bias, q_labels, k_labels, block):
  stats, _ = jax.lax.scan(ce_tile_step(q, scale, bias, q_labels), ce_init(q),
                          (_blocks(k, block), _blocks(k_labels, block)))
  return ce_finish(stats)


def _row_ce_fwd(q, k, scale, bias, q_labels, k_labels, block):
  loss, (lse, tcnt) = _row_ce_forward(q, k, scale, bias, q_labels, k_labels, block)
  return loss, (q, k, scale, bias, q_labels, k_labels, lse, tcnt)


def grad_tile_step(q, scale, bias, grad_of_logits):
  """The backward scan step of one (keys, key labels) block: the logits tile is recomputed,
  `grad_of_logits(logits, key_labels_of_tile)` is the loss's gradient with respect to it;
  accumulates (dq, dscale, dbias) and returns the block's dk."""
  def step(carry, blk):
    k_blk, kl_blk = blk
    dots = jnp.dot(q, k_blk.T, precision=HIGHEST)
    grad_logits = grad_of_logits(scale * dots + bias, kl_blk)
    dk_blk = scale * jnp.dot(grad_logits.T, q, precision=HIGHEST)
    return add_query_grads(carry, k_blk, scale, dots, grad_logits), dk_blk
  return step


def add_query_grads(acc, k_blk, scale, dots, grad_logits):
  """(dq, dscale, dbias) plus one tile's share: the tile's logits are `scale * dots + bias`
  with `dots` = q · k_blkᵀ, and `grad_logits` the loss's gradient with respect to them."""
  dq, dscale, dbias = acc
  return (dq + scale * jnp.dot(grad_logits, k_blk, precision=HIGHEST),
          dscale + jnp.sum(grad_logits * dots), dbias + jnp.sum(grad_logits))


def grad_init(q):
  return jnp.zeros_like(q), _full((), 0.0, q), _full((), 0.0, q)


def cotangents(dq, dk, dscale, dbias, scale, bias):
  """The custom_vjp cotangents of (q, k, scale, bias, q_labels, k_labels)."""
  return (dq, dk, dscale.astype(jnp.result_type(scale)), dbias.astype(jnp.result_type(bias)),
          None, None)


def _logits_backward(q, k, scale, bias, k_labels, block, grad_of_logits):
  """The custom_vjp cotangents (q, k, scale, bias, labels) of a row loss whose gradient with
  respect to one [b, block] tile of logits is `grad_of_logits(logits, key_labels_of_tile)`;
  each tile is recomputed, never stored."""
  (dq, dscale, dbias), dk = jax.lax.scan(grad_tile_step(q, scale, bias, grad_of_logits),
                                         grad_init(q),
                                         (_blocks(k, block), _blocks(k_labels, block)))
  return cotangents(dq, dk.reshape(k.shape), dscale, dbias, scale, bias)


def ce_grad(logits, lse, g, tcnt, match, axis: int = 1):
  """Gradient of Σ g·CE along `axis` (1: each row over its columns, 0: each column over its
  rows) with respect to a logits tile: softmax minus the uniform target over the matching
  entries, times the cotangent g."""
  expand = (lambda x: x[:, None]) if axis == 1 else (lambda x: x[None, :])
  return expand(g) * jnp.exp(logits - expand(lse)) - jnp.where(match, expand(g / tcnt), 0.0)


def ce_grad_of_logits(q_labels, g, lse, tcnt):
  """`ce_grad` of the rows as a function of (logits tile, its keys' labels)."""
  return lambda logits, kl_blk: ce_grad(logits, lse, g, tcnt,
                                        q_labels[:, None] == kl_blk[None, :])


def _row_ce_bwd(block, res, g):
  q, k, scale, bias, q_labels, k_labels, lse, tcnt = res
  return _logits_backward(q, k, scale, bias, k_labels, block,
                          ce_grad_of_logits(q_labels, g, lse, tcnt))


_tiled_row_ce.defvjp(_row_ce_fwd, _row_ce_bwd)


# ---------------------------------------------------------------- pairwise sigmoid

def _signs(q_labels, kl_blk):
  """z: +1 where the labels match (positives), −1 elsewhere."""
  return jnp.where(q_labels[:, None] == kl_blk[None, :], 1.0, -1.0)


def tiled_row_sigmoid_loss(q, k, scale, bias, q_labels, k_labels, block: int):
  """Per-row Σ_j −log σ(z_ij (scale q_i·k_j + bias)), z = +1 for keys sharing the row's
  label, −1 otherwise (SigLIP). q: [b, D], k: [B, D], labels int [b] / [B] -> [b]."""
  return _tiled_row_sigmoid(q, k, _as_varying(scale, q), _as_varying(bias, q), q_labels,
                            k_labels, block)


def sigmoid_tile_step(q, scale, bias, q_labels):
  """The scan step adding one (keys, key labels) block's −log σ(z (scale q·k + bias)) terms
  to the running per-row sums."""
  def step(acc, blk):
    k_blk, kl_blk = blk
    z = _signs(q_labels, kl_blk)
    return acc - jax.nn.log_sigmoid(z * _tile_logits(q, k_blk, scale, bias)).sum(axis=1), None
  return step


def sigmoid_grad_of_logits(g, q_labels):
  """d/dl −log σ(z l) = −z σ(−z l), scaled by the rows' cotangent g."""
  def grad_of_logits(logits, kl_blk):
    z = _signs(q_labels, kl_blk)
    return -g[:, None] * z * jax.nn.sigmoid(-z * logits)
  return grad_of_logits


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _tiled_row_sigmoid(q, k, scale, bias, q_labels, k_labels, block: int):
  acc, _ = jax.lax.scan(sigmoid_tile_step(q, scale, bias, q_labels),
                        _full((q.shape[0],), 0.0, q),
                        (_blocks(k, block), _blocks(k_labels, block)))
  return acc


def _row_sigmoid_fwd(q, k, scale, bias, q_labels, k_labels, block):
  return (_tiled_row_sigmoid(q, k, scale, bias, q_labels, k_labels, block),
          (q, k, scale, bias, q_labels, k_labels))


def _row_sigmoid_bwd(block, res, g):
  q, k, scale, bias, q_labels, k_labels = res
  return _logits_backward(q, k, scale, bias, k_labels, block,
                          sigmoid_grad_of_logits(g, q_labels))


_tiled_row_sigmoid.defvjp(_row_sigmoid_fwd, _row_sigmoid_bwd)


# ---------------------------------------------------------------- random Fourier features

def tiled_rff_sum(q, k, scale, omega, phase, per_kernel: int, block: int):
  """Σ_ij φ(scale q_i·k_j), φ(u) = sqrt(2/R) cos(ω u + b), over all entries of the [b, B]
  similarity matrix -> [F].

  Features are looped over inside each tile, so no [b, block, F] tensor exists; with
  block = B this is the dense computation (one [b, B] tile)."""
  return _tiled_rff_sum(q, k, _as_varying(scale, q), omega, phase, per_kernel, block)


def rff_tile_sum(sims, omega, phase, per_kernel: int):
  """Σ over a tile of similarities of φ_f(u) = sqrt(2/R) cos(ω_f u + b_f) -> [F], one feature
  at a time (no [rows, cols, F] tensor)."""
  per_feature = jax.lax.map(lambda wb: cos_sin(sims * wb[0] + wb[1])[0].sum(), (omega, phase))
  return math.sqrt(2.0 / per_kernel) * per_feature


def rff_grad_of_sims(sims, g, omega, phase, per_kernel: int):
  """d/du Σ_f g_f φ_f(u) = -sqrt(2/R) Σ_f g_f ω_f sin(ω_f u + b_f), elementwise over a tile."""
  amp = math.sqrt(2.0 / per_kernel)

  def add_feature(acc, gwb):
    g_f, w, ph = gwb
    return acc - (amp * g_f * w) * cos_sin(sims * w + ph)[1], None

  return jax.lax.scan(add_feature, jnp.zeros_like(sims), (g, omega, phase))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _tiled_rff_sum(q, k, scale, omega, phase, per_kernel: int, block: int):
  def step(acc, k_blk):
    sims = scale * jnp.dot(q, k_blk.T, precision=HIGHEST)
    return acc + rff_tile_sum(sims, omega, phase, per_kernel), None

  acc, _ = jax.lax.scan(step, _full(omega.shape, 0.0, q), _blocks(k, block))
  return acc


def _rff_fwd(q, k, scale, omega, phase, per_kernel, block):
  return _tiled_rff_sum(q, k, scale, omega, phase, per_kernel, block), (q, k, scale, omega, phase)


def _rff_bwd(per_kernel, block, res, g):
  q, k, scale, omega, phase = res

  def step(carry, k_blk):
    dq, dscale = carry
    dots = jnp.dot(q, k_blk.T, precision=HIGHEST)
    grad_sims = rff_grad_of_sims(scale * dots, g, omega, phase, per_kernel)
    dq = dq + scale * jnp.dot(grad_sims, k_blk, precision=HIGHEST)
    dk_blk = scale * jnp.dot(grad_sims.T, q, precision=HIGHEST)
    return (dq, dscale + jnp.sum(grad_sims * dots)), dk_blk

  (dq, dscale), dk = jax.lax.scan(step, (jnp.zeros_like(q), _full((), 0.0, q)),
                                  _blocks(k, block))
  # ω and b are random draws, not parameters: no gradient flows to them.
  return dq, dk.reshape(k.shape), dscale.astype(jnp.result_type(scale)), None, None


_tiled_rff_sum.defvjp(_rff_fwd, _rff_bwd)
