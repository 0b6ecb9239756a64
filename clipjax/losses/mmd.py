"""DRAFT's RBF-kernel MMD between image–caption and image–dialogue similarities (methods.md §3).

The samples are the B² scalar entries of S = s·T(y) I(x)ᵀ and D = s·T(z) I(x)ᵀ over the
global batch. Each device holds its query rows of S and D; every estimator reduces partial
sums with psum, and all random draws (Fourier features, subsample indices) come from one key
shared by all devices, so the value is the global-batch MMD, never a per-device one.

Estimators: `rff` (default; random Fourier features, linear in B², tiled when block_size is
set), `subsample` (unbiased U-statistic on m random entries of each matrix) and `full` (the
exact V-statistic, O(B⁴): small batches and tests). Bandwidth: σ₀ = std of S ∪ D (exact, from
D×D Gram matrices, no B² buffer), under stop_gradient; `multi_kernel` sums the kernels
σ₀·2^k, k = -2..2.

`exchange`: how a device sees the other devices' image rows, "all_gather" or "ring"
(`losses.ring_mmd`: the keys pass round the mesh, so `rff` holds no global-batch array). σ₀
and `subsample` need neither: σ₀'s statistics are psum-reduced [D] and [D, D] sums, and the
subsample estimator collects only its m sampled keys.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from clipjax.losses.options import LossOptions, reads
from clipjax.losses.ring_mmd import ring_pair_sum, ring_rff_difference, ring_similarities
from clipjax.losses.tiled import HIGHEST, pick_block, tiled_rff_sum
from clipjax.parallel.collectives import AxisName, all_gather, psum, shard_offset

ESTIMATORS = ("rff", "subsample", "full")


@dataclasses.dataclass(frozen=True)
class MMDConfig:
  estimator: str = "rff"
  squared: bool = False        # False: L = sqrt(max(MMD², 0) + 1e-12) as eq. 4.4.3 prints
  num_features: int = 64       # R, Fourier features per bandwidth
  subsample_size: int = 4096   # m, entries drawn from each matrix
  multi_kernel: bool = False   # sum of RBF kernels at σ₀·2^k, k in -2..2

  def __post_init__(self):
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"mmd.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
    if self.num_features < 1 or self.subsample_size < 2:
      raise ValueError("mmd.num_features must be >= 1 and mmd.subsample_size >= 2")


def bandwidths(s_queries, d_queries, keys, scale, multi_kernel: bool, axis_name: AxisName):
  """σ₀ = std over all entries of S ∪ D, exact and without forming them:
  Σ_ij q_i·k_j = (Σq)·(Σk) and Σ_ij (q_i·k_j)² = <QᵀQ, KᵀK>_F.

  s_queries, d_queries, keys: this shard's rows (the key statistics are psum-reduced).
  Returns σ_k [K] under stop_gradient.
  """
  s_queries, d_queries, keys, scale = jax.lax.stop_gradient((s_queries, d_queries, keys, scale))
  k_sum = psum(keys.sum(0), axis_name)
  k_gram = psum(jnp.dot(keys.T, keys, precision=HIGHEST), axis_name)
  total = sq_total = 0.0
  for q in (s_queries, d_queries):
    total = total + jnp.dot(q.sum(0), k_sum, precision=HIGHEST)
    sq_total = sq_total + jnp.sum(jnp.dot(q.T, q, precision=HIGHEST) * k_gram)
  # entries of S and D: 2·B², in float (B = 65,536 gives 8.6e9, past int32)
  count = 2.0 * psum(float(s_queries.shape[0]), axis_name) * psum(float(keys.shape[0]),
                                                                   axis_name)
  mean = scale * psum(total, axis_name) / count
  var = jnp.maximum(scale ** 2 * psum(sq_total, axis_name) / count - mean ** 2, 1e-12)
  exps = jnp.arange(-2, 3, dtype=jnp.float32) if multi_kernel else jnp.zeros((1,), jnp.float32)
  return jnp.sqrt(var) * 2.0 ** exps


def _rbf(u, v, sigmas):
  """Σ_k exp(-(u - v)² / (2σ_k²)) for broadcastable u, v."""
  d2 = jnp.square(u - v)[..., None]
  return jnp.exp(-d2 / (2 * jnp.square(sigmas))).sum(-1)


@reads("block_size", "exchange")
def mmd2(s_queries: jax.Array, d_queries: jax.Array, keys: jax.Array, logit_scale, *,
         key: jax.Array | None = None, config: MMDConfig = MMDConfig(),
         options: LossOptions = LossOptions(), axis_name: AxisName = None):
  """MMD² between the entries of S = s·s_queries keysᵀ and D = s·d_queries keysᵀ.

  s_queries, d_queries: [N, D] (captions, dialogues; this shard's rows); keys: [N, D] (images;
  this shard's rows); all L2-normalised. logit_scale: the multiplier s.
  key: PRNG key, identical on all devices (needed by `rff` and `subsample`).
  options.exchange: "all_gather" (the keys gathered) or "ring" (`losses.ring_mmd`);
  options.block_size: the rff estimator's tiles. Returns (mmd², sigmas [K]).
  """
  ring, block_size = options.exchange == "ring" and axis_name is not None, options.block_size
  s_q, d_q, keys = (x.astype(jnp.float32) for x in (s_queries, d_queries, keys))
  sigmas = bandwidths(s_q, d_q, keys, logit_scale, config.multi_kernel, axis_name)
  if config.estimator != "full" and key is None:
    raise ValueError(f"mmd estimator {config.estimator!r} needs a PRNG key (the same on every device)")
  scale = jnp.asarray(logit_scale, jnp.float32)
  if config.estimator == "rff":
    value = _rff_mmd2(s_q, d_q, keys, scale, key, sigmas, config, block_size, axis_name, ring)
  elif config.estimator == "subsample":
    value = _subsample_mmd2(s_q, d_q, keys, scale, key, sigmas, config.subsample_size,
                            axis_name)
  else:
    value = _full_mmd2(s_q, d_q, keys, scale, sigmas, axis_name, ring)
  return value, sigmas


def rff_features(key: jax.Array, sigmas: jax.Array, num_features: int):
  """ω ~ N(0, 1/σ_k²) and b ~ U[0, 2π), R per bandwidth -> (omega [K·R], phase [K·R])."""
  k_omega, k_phase = jax.random.split(key)
  omega = (jax.random.normal(k_omega, (sigmas.shape[0], num_features)) / sigmas[:, None])
  phase = jax.random.uniform(k_phase, (sigmas.shape[0] * num_features,), maxval=2 * jnp.pi)
  return omega.reshape(-1), phase


def subsample_positions(key: jax.Array, m: int, n: int) -> jax.Array:
  """Entries drawn for the subsample estimator: int [2 (S, D), 2 (row, col), m] in [0, n)."""
  return jax.random.randint(key, (2, 2, m), 0, n)


def _rff_mmd2(s_q, d_q, keys, scale, key, sigmas, config, block_size, axis_name, ring):
  r = config.num_features
  omega, phase = rff_features(key, sigmas, r)
  count = psum(float(s_q.shape[0]), axis_name) ** 2  # B², float: past int32 at 65,536
  if ring:
    local = keys.shape[0]
    diff = ring_rff_difference(s_q, d_q, keys, scale, omega, phase, r,
                               pick_block(local, block_size or local), axis_name)
    return jnp.sum(jnp.square(psum(diff, axis_name) / count))
  keys = all_gather(keys, axis_name)
  block = pick_block(keys.shape[0], block_size) if block_size else keys.shape[0]

  def mean_features(q):
    return psum(tiled_rff_sum(q, keys, scale, omega, phase, r, block), axis_name) / count

  return jnp.sum(jnp.square(mean_features(s_q) - mean_features(d_q)))


def _subsample_mmd2(s_q, d_q, keys, scale, key, sigmas, m, axis_name):
  """U-statistic on m entries of S and m of D drawn uniformly with replacement (independent
  positions for S and D): unbiased for the full V-statistic. Only the sampled rows and keys
  ([m, D] each) are collected, whatever the exchange: no device holds the global batch."""
  def sample(q, positions):
    rows, cols = positions
    return scale * jnp.sum(_take_rows(q, rows, axis_name) * _take_rows(keys, cols, axis_name), -1)

  positions = subsample_positions(key, m, psum(keys.shape[0], axis_name))
  s, d = sample(s_q, positions[0]), sample(d_q, positions[1])
  off_diag = 1.0 - jnp.eye(m)
  k_ss = jnp.sum(_rbf(s[:, None], s[None, :], sigmas) * off_diag) / (m * (m - 1))
  k_dd = jnp.sum(_rbf(d[:, None], d[None, :], sigmas) * off_diag) / (m * (m - 1))
  k_sd = jnp.mean(_rbf(s[:, None], d[None, :], sigmas))
  return k_ss + k_dd - 2 * k_sd


def _take_rows(x, rows, axis_name: AxisName):
  """x's rows at global indices `rows` [m] -> [m, D] on every device: each row lives on one
  device, the others add zeros (so the psum is exact, and its transpose routes the gradient
  back to the owner)."""
  local = x.shape[0]
  offset = shard_offset(local, axis_name)
  mine = (rows >= offset) & (rows < offset + local)
  return psum(jnp.where(mine[:, None], x[jnp.clip(rows - offset, 0, local - 1)], 0.0),
              axis_name)


def _full_mmd2(s_q, d_q, keys, scale, sigmas, axis_name, ring):
  """Exact V-statistic over all B² entries of each matrix (O(B⁴) time; each device pairs its
  own rows' entries with all entries, then psum)."""
  kernel = lambda u, v: _rbf(u, v, sigmas)
  if ring:
    entries = lambda q: ring_similarities(q, keys, scale, axis_name).reshape(-1)
    pair_sum = lambda u, v: ring_pair_sum(u, v, kernel, axis_name)
  else:
    all_keys = all_gather(keys, axis_name)
    entries = lambda q: (scale * jnp.dot(q, all_keys.T, precision=HIGHEST)).reshape(-1)
    pair_sum = lambda u, v: kernel(u[:, None], all_gather(v, axis_name)[None, :]).sum()
  s_local, d_local = entries(s_q), entries(d_q)
  pairs = psum(float(s_local.shape[0]), axis_name) ** 2
  mean_k = lambda u, v: psum(pair_sum(u, v), axis_name) / pairs
  return mean_k(s_local, s_local) + mean_k(d_local, d_local) - 2 * mean_k(s_local, d_local)
