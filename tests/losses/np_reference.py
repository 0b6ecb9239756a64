"""Float64 NumPy reference implementations of docs/methods.md §1–7, written from the formulas
independently of clipjax.losses (no shared code), plus central-difference gradients."""
import numpy as np


def logsumexp(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def ce_rows(logits, positives=None):
  """Mean over rows of -log softmax with targets uniform over `positives` (default: diagonal)."""
  if positives is None:
    positives = np.eye(*logits.shape, dtype=bool)
  targets = positives / positives.sum(1, keepdims=True)
  return float(np.mean(logsumexp(logits, 1) - (targets * logits).sum(1)))


def same_label(labels):
  return None if labels is None else labels[:, None] == labels[None, :]


def clip(i, t, s, bias=0.0, labels=None):
  logits = s * i @ t.T + bias
  pos = same_label(labels)
  return 0.5 * (ce_rows(logits, pos) + ce_rows(logits.T, None if pos is None else pos.T))


def query(q, k, s, bidirectional=False):
  one = ce_rows(s * q @ k.T)
  return 0.5 * (one + ce_rows(s * k @ q.T)) if bidirectional else one


def three_tower(i, t, g, s, a=0.65, bidirectional=False):
  return a * query(g, i, s, bidirectional) + (1 - a) * query(g, t, s, bidirectional)


def draft_contrastive(i, y, z, s, a=0.65):
  return a * query(z, i, s) + (1 - a) * query(y, i, s)


def sigmoid_loss(i, t, s, b, labels=None):
  """SL(I, T) = -(1/B) sum_ij log sigmoid(z_ij (s i.t + b)); z = +1 for positives, else -1."""
  logits = s * i @ t.T + b
  pos = np.eye(len(i), dtype=bool) if labels is None else same_label(labels)
  z = np.where(pos, 1.0, -1.0)
  return float(np.sum(np.logaddexp(0.0, -z * logits)) / len(i))


def three_tower_sigmoid(i, t, g, s, b, a=0.65):
  return a * sigmoid_loss(g, i, s, b) + (1 - a) * sigmoid_loss(g, t, s, b)


def draft_contrastive_sigmoid(i, y, z, s, b, a=0.65):
  return a * sigmoid_loss(z, i, s, b) + (1 - a) * sigmoid_loss(y, i, s, b)


def infonce(q, p, negatives=None, tau=0.05):
  sim_qp = q @ p.T / tau
  if negatives is not None:
    sim_qp = np.concatenate([sim_qp, q @ negatives.reshape(-1, q.shape[1]).T / tau], axis=1)
  return ce_rows(sim_qp) + ce_rows(p @ q.T / tau)


def mult(i, t, m, s, a, b):
  return a * clip(i, t, s) + b * clip(t, m, s) + (1 - a - b) * clip(m, i, s)


def sims(q, k, s):
  return (s * q @ k.T).reshape(-1)


def sigma0(y, z, i, s):
  return float(np.std(np.concatenate([sims(y, i, s), sims(z, i, s)])))


def rbf(u, v, sigmas):
  d2 = (u[:, None] - v[None, :]) ** 2
  return sum(np.exp(-d2 / (2 * sig ** 2)) for sig in sigmas)


def mmd2_full(sv, dv, sigmas):
  return float(rbf(sv, sv, sigmas).mean() + rbf(dv, dv, sigmas).mean() - 2 * rbf(sv, dv, sigmas).mean())


def mmd2_rff(sv, dv, omega, phase, per_kernel):
  phi = lambda u: np.sqrt(2.0 / per_kernel) * np.cos(u[:, None] * omega[None, :] + phase[None, :])
  return float(np.sum((phi(sv).mean(0) - phi(dv).mean(0)) ** 2))


def mmd2_subsample(smat, dmat, positions, sigmas):
  s = smat[positions[0, 0], positions[0, 1]]
  d = dmat[positions[1, 0], positions[1, 1]]
  m = len(s)
  off = 1 - np.eye(m)
  return float((rbf(s, s, sigmas) * off).sum() / (m * (m - 1))
               + (rbf(d, d, sigmas) * off).sum() / (m * (m - 1)) - 2 * rbf(s, d, sigmas).mean())


def draft(estimator, key, multi_kernel, squared, i, y, z, scale, m=256, r=64):
  """NumPy DRAFT loss (i, y, z, s) -> float with σ₀ held fixed at the inputs' value
  (stop_gradient in clipjax); the random draws (Fourier features, subsample positions) are
  clipjax's, from `key`, so both sides estimate with the same ones."""
  from clipjax.losses.mmd import rff_features, subsample_positions
  sig = sigma0(y, z, i, scale) * (2.0 ** np.arange(-2, 3) if multi_kernel else np.ones(1))
  eps, phase = (np.asarray(x, np.float64) for x in rff_features(key, np.ones(len(sig), np.float32), r))
  omega = (eps.reshape(len(sig), r) / sig[:, None]).reshape(-1)
  positions = np.asarray(subsample_positions(key, m, len(i)))

  def loss(i, y, z, s):
    smat, dmat = s * y @ i.T, s * z @ i.T
    if estimator == "full":
      value = mmd2_full(smat.reshape(-1), dmat.reshape(-1), sig)
    elif estimator == "rff":
      value = mmd2_rff(smat.reshape(-1), dmat.reshape(-1), omega, phase, r)
    else:
      value = mmd2_subsample(smat, dmat, positions, sig)
    term = value if squared else np.sqrt(max(value, 0.0) + 1e-12)
    return draft_contrastive(i, y, z, s, 0.65) + term
  return loss


def numeric_grad(f, args, eps=1e-6):
  """Central differences of scalar f(*args) w.r.t. every float64 array/scalar in args."""
  args = [np.array(a, np.float64) for a in args]
  grads = []
  for idx, a in enumerate(args):
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for j in range(flat.size):
      orig = flat[j]
      flat[j] = orig + eps
      hi = f(*args)
      flat[j] = orig - eps
      lo = f(*args)
      flat[j] = orig
      gflat[j] = (hi - lo) / (2 * eps)
    grads.append(g)
  return grads
