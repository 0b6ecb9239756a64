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
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

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

  s_queries, d_queries: this shard's rows; keys: all keys (already gathered).
  Returns σ_k [K] under stop_gradient.
  """
  s_queries, d_queries, keys, scale = jax.lax.stop_gradient((s_queries, d_queries, keys, scale))
  k_sum = keys.sum(0)
  k_gram = jnp.dot(keys.T, keys, precision=HIGHEST)
  total = sq_total = 0.0
  for q in (s_queries, d_queries):
    total = total + jnp.dot(q.sum(0), k_sum, precision=HIGHEST)
    sq_total = sq_total + jnp.sum(jnp.dot(q.T, q, precision=HIGHEST) * k_gram)
  # entries of S and D: 2·B², in float (B = 65,536 gives 8.6e9, past int32)
  count = 2.0 * psum(float(s_queries.shape[0]), axis_name) * keys.shape[0]
  mean = scale * psum(total, axis_name) / count
  var = jnp.maximum(scale ** 2 * psum(sq_total, axis_name) / count - mean ** 2, 1e-12)
  exps = jnp.arange(-2, 3, dtype=jnp.float32) if multi_kernel else jnp.zeros((1,), jnp.float32)
  return jnp.sqrt(var) * 2.0 ** exps


def _rbf(u, v, sigmas):
  """Σ_k exp(-(u - v)² / (2σ_k²)) for broadcastable u, v."""
  d2 = jnp.square(u - v)[..., None]
  return jnp.exp(-d2 / (2 * jnp.square(sigmas))).sum(-1)


def _similarities(q, keys, scale):
  return scale * jnp.dot(q.astype(jnp.float32), keys.T, precision=HIGHEST)


def mmd2(s_queries: jax.Array, d_queries: jax.Array, keys: jax.Array, logit_scale, *,
         key: jax.Array | None = None, config: MMDConfig = MMDConfig(),
         block_size: int | None = None, axis_name: AxisName = None):
  """MMD² between the entries of S = s·s_queries keysᵀ and D = s·d_queries keysᵀ.

  s_queries, d_queries: [N, D] (captions, dialogues; this shard's rows); keys: [N, D] (images;
  this shard's rows, all-gathered here); all L2-normalised. logit_scale: the multiplier s.
  key: PRNG key, identical on all devices (needed by `rff` and `subsample`).
  Returns (mmd², sigmas [K]).
  """
  all_keys = all_gather(keys, axis_name).astype(jnp.float32)
  sigmas = bandwidths(s_queries.astype(jnp.float32), d_queries.astype(jnp.float32), all_keys,
                      logit_scale, config.multi_kernel, axis_name)
  if config.estimator != "full" and key is None:
    raise ValueError(f"mmd estimator {config.estimator!r} needs a PRNG key (the same on every device)")
  if config.estimator == "rff":
    value = _rff_mmd2(s_queries, d_queries, all_keys, logit_scale, key, sigmas, config,
                      block_size, axis_name)
  elif config.estimator == "subsample":
    value = _subsample_mmd2(s_queries, d_queries, all_keys, logit_scale, key, sigmas,
                            config.subsample_size, axis_name)
  else:
    value = _full_mmd2(s_queries, d_queries, all_keys, logit_scale, sigmas, axis_name)
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


def _rff_mmd2(s_q, d_q, keys, scale, key, sigmas, config, block_size, axis_name):
  r = config.num_features
  omega, phase = rff_features(key, sigmas, r)
  count = psum(float(s_q.shape[0]), axis_name) * keys.shape[0]  # B², float: past int32 at 65,536
  scale = jnp.asarray(scale, jnp.float32)

  block = pick_block(keys.shape[0], block_size) if block_size else keys.shape[0]

  def mean_features(q):
    total = tiled_rff_sum(q.astype(jnp.float32), keys, scale, omega, phase, r, block)
    return psum(total, axis_name) / count

  return jnp.sum(jnp.square(mean_features(s_q) - mean_features(d_q)))


def _subsample_mmd2(s_q, d_q, keys, scale, key, sigmas, m, axis_name):
  """U-statistic on m entries of S and m of D drawn uniformly with replacement (independent
  positions for S and D): unbiased for the full V-statistic."""
  n_global = keys.shape[0]
  local = s_q.shape[0]
  offset = shard_offset(local, axis_name)

  def sample(q, positions):
    rows, cols = positions
    mine = (rows >= offset) & (rows < offset + local)
    q_rows = q.astype(jnp.float32)[jnp.clip(rows - offset, 0, local - 1)]
    vals = scale * jnp.sum(q_rows * keys[cols], axis=-1)
    return psum(jnp.where(mine, vals, 0.0), axis_name)  # each entry lives on one device

  positions = subsample_positions(key, m, n_global)
  s, d = sample(s_q, positions[0]), sample(d_q, positions[1])
  off_diag = 1.0 - jnp.eye(m)
  k_ss = jnp.sum(_rbf(s[:, None], s[None, :], sigmas) * off_diag) / (m * (m - 1))
  k_dd = jnp.sum(_rbf(d[:, None], d[None, :], sigmas) * off_diag) / (m * (m - 1))
  k_sd = jnp.mean(_rbf(s[:, None], d[None, :], sigmas))
  return k_ss + k_dd - 2 * k_sd


def _full_mmd2(s_q, d_q, keys, scale, sigmas, axis_name):
  """Exact V-statistic over all B² entries of each matrix (O(B⁴) time; each device pairs its
  own rows' entries with all entries, then psum)."""
  s_local = _similarities(s_q, keys, scale).reshape(-1)
  d_local = _similarities(d_q, keys, scale).reshape(-1)
  s_all, d_all = all_gather(s_local, axis_name), all_gather(d_local, axis_name)
  pairs = s_all.shape[0] ** 2
  mean_k = lambda u, v: psum(_rbf(u[:, None], v[None, :], sigmas).sum(), axis_name) / pairs
  return mean_k(s_local, s_all) + mean_k(d_local, d_all) - 2 * mean_k(s_local, d_all)
