"""Contrastive losses over the global batch (docs/methods.md §1, §2, §3 eq. 4.4.1, §4, §5, §6, §7).

Every loss takes embeddings whose leading dimension is the batch and an optional
`axis_name`. With `axis_name=None` the inputs are the whole global batch on one device. Under
`shard_map` (see `clipjax.parallel.mesh.on_mesh`) they are this device's rows: the other side
is all-gathered (gradients flow back through the gather), each device computes the loss of
its own query rows against every key, and the sum is psum-reduced to the global mean.

Conventions: embeddings must be L2-normalised by the caller (as open_clip's losses expect);
`logit_scale` is the multiplier s = exp(stored logit_scale), not its log; similarities are
computed in float32 at HIGHEST matmul precision whatever the towers' compute dtype. A
non-finite embedding makes the loss non-finite (never silently masked): the training loop
checks the loss and refuses the step.

The fixed settings come as one `LossOptions` (`options`); each loss reads the fields its
`@reads` names. `block_size` switches to the tiled path, which never holds more than a
[b_local, block] tile of the logit matrix (forward or backward); `exchange="ring"` passes the
keys round the mesh instead of gathering them. Each query-side term has two forms (`form`,
docs/methods.md §7b): "softmax", CE_rows(s·Q Kᵀ), and
"sigmoid", SigLIP's SL(Q, K) = −(1/B) Σ_i Σ_j log σ(z_ij (t·Q_i·K_j + b)) for models adapted
from a SigLIP base (t, b: its logit scale and bias).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from clipjax.losses.options import LossOptions, reads
from clipjax.losses.ring import (
  ring_row_cross_entropy,
  ring_row_sigmoid_loss,
  ring_symmetric_cross_entropy,
)
from clipjax.losses.tiled import (
  HIGHEST,
  pick_block,
  tiled_row_cross_entropy,
  tiled_row_sigmoid_loss,
)
from clipjax.parallel.collectives import AxisName, all_gather, psum, shard_offset


def check_embeddings(**named: jax.Array) -> int:
  """Validates [N, D] float embeddings of one batch; returns N."""
  items = [(k, v) for k, v in named.items() if v is not None]
  first_name, first = items[0]
  for name, x in items:
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{name} must be a float [batch, dim] array, got {x.dtype}{list(x.shape)}")
    if x.shape != first.shape:
      raise ValueError(f"{name} has shape {list(x.shape)} but {first_name} has "
                       f"{list(first.shape)}: the towers disagree")
    if x.dtype != first.dtype:
      raise ValueError(f"{name} is {x.dtype} but {first_name} is {first.dtype}: cast the "
                       f"towers' outputs to one dtype (float32 for the loss)")
  if first.shape[0] == 0:
    raise ValueError("empty batch: the contrastive losses need at least one sample")
  return first.shape[0]


def _labels(local_n: int, labels, axis_name: AxisName):
  """This shard's labels [b]: the global row index unless labels are given."""
  if labels is None:
    return shard_offset(local_n, axis_name) + jnp.arange(local_n, dtype=jnp.int32)
  labels = jnp.asarray(labels, jnp.int32)
  if labels.shape != (local_n,):
    raise ValueError(f"labels must have shape [{local_n}] (one per sample), got {labels.shape}")
  return labels


def _ring(exchange: str, axis_name: AxisName) -> bool:
  """Whether the keys go round the ring (`losses.ring`) instead of being all-gathered."""
  return exchange == "ring" and axis_name is not None


def _ring_args(queries, keys, scale, bias, block_size):
  """float32 queries, keys, scale, bias and the tile size of a ring loss (dividing both the
  query and the key rows: a device's keys may outnumber its queries, as with hard negatives)."""
  scale = jnp.asarray(scale, jnp.float32)
  bias = jnp.zeros((), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
  rows = math.gcd(queries.shape[0], keys.shape[0])
  block = pick_block(rows, block_size or rows)
  return queries.astype(jnp.float32), keys.astype(jnp.float32), scale, bias, block


def _rows(kind: str, queries, keys, scale, bias, q_labels, k_labels, block_size, axis_name,
          exchange: str) -> jax.Array:
  """Per query row, the `kind` ("softmax" | "sigmoid") loss against the keys of the global
  batch: this shard's `keys` [b, D] and `k_labels` [b], all-gathered or sent round the ring."""
  if _ring(exchange, axis_name):
    ring = ring_row_cross_entropy if kind == "softmax" else ring_row_sigmoid_loss
    q, k, scale, bias, block = _ring_args(queries, keys, scale, bias, block_size)
    return ring(q, k, scale, bias, q_labels, k_labels, block, axis_name)
  kw = dict(q_labels=q_labels, k_labels=all_gather(k_labels, axis_name), block_size=block_size)
  if kind == "softmax":
    return row_cross_entropy(queries, all_gather(keys, axis_name), scale, bias=bias, **kw)
  return row_sigmoid_loss(queries, all_gather(keys, axis_name), scale, bias, **kw)


def row_cross_entropy(queries: jax.Array, keys: jax.Array, scale, *, bias=None, q_labels,
                      k_labels, block_size: int | None = None) -> jax.Array:
  """CE of each query row of softmax(scale·q kᵀ + bias) against the keys sharing its label
  (uniform soft target; plain InfoNCE when labels are indices). [b, D], [B, D] -> [b]."""
  q = queries.astype(jnp.float32)
  k = keys.astype(jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  bias = jnp.zeros((), jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
  if block_size:
    return tiled_row_cross_entropy(q, k, scale, bias, q_labels, k_labels,
                                   pick_block(k.shape[0], block_size))
  logits = scale * jnp.dot(q, k.T, precision=HIGHEST) + bias
  match = q_labels[:, None] == k_labels[None, :]
  target = jnp.where(match, logits, 0.0).sum(axis=1) / match.sum(axis=1)
  return jax.nn.logsumexp(logits, axis=1) - target


@reads("bidirectional", "block_size", "exchange")
def query_loss(queries: jax.Array, keys: jax.Array, scale, *, bias=None, labels=None,
               options: LossOptions = LossOptions(), axis_name: AxisName = None) -> jax.Array:
  """Mean over the global batch of CE_rows(s · queries keysᵀ): queries pick their own key
  among all keys of the global batch. With `options.bidirectional`, the mean of both
  directions. queries, keys: [N, D] L2-normalised (this shard's rows under a mesh). A scalar."""
  n = check_embeddings(queries=queries, keys=keys)
  lab = _labels(n, labels, axis_name)
  if options.bidirectional and _ring(options.exchange, axis_name):  # one ring, both directions
    q, k, s, b, block = _ring_args(queries, keys, scale, bias, options.block_size)
    rows, cols = ring_symmetric_cross_entropy(q, k, s, b, lab, block, axis_name)
    return psum(0.5 * (rows.sum() + cols.sum()), axis_name) / psum(n, axis_name)
  rows = functools.partial(_rows, "softmax", scale=scale, bias=bias, q_labels=lab, k_labels=lab,
                           block_size=options.block_size, axis_name=axis_name,
                           exchange=options.exchange)
  total = rows(queries, keys).sum()
  if options.bidirectional:
    total = 0.5 * (total + rows(keys, queries).sum())
  return psum(total, axis_name) / psum(n, axis_name)


def row_sigmoid_loss(queries: jax.Array, keys: jax.Array, scale, bias, *, q_labels, k_labels,
                     block_size: int | None = None) -> jax.Array:
  """Per query row Σ_j −log σ(z_ij (scale·q_i·k_j + bias)), z = +1 for the keys sharing its
  label, −1 for the rest. [b, D], [B, D] -> [b]."""
  q = queries.astype(jnp.float32)
  k = keys.astype(jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  bias = jnp.asarray(bias, jnp.float32)
  if block_size:
    return tiled_row_sigmoid_loss(q, k, scale, bias, q_labels, k_labels,
                                  pick_block(k.shape[0], block_size))
  logits = scale * jnp.dot(q, k.T, precision=HIGHEST) + bias
  z = jnp.where(q_labels[:, None] == k_labels[None, :], 1.0, -1.0)
  return -jax.nn.log_sigmoid(z * logits).sum(axis=1)


@reads("block_size", "exchange")
def sigmoid_query_loss(queries: jax.Array, keys: jax.Array, scale, bias, *, labels=None,
                       options: LossOptions = LossOptions(),
                       axis_name: AxisName = None) -> jax.Array:
  """SL(Q, K) = −(1/B) Σ_i Σ_j log σ(z_ij (t·Q_i·K_j + b)) over the global batch (methods.md §7,
  §7b): each device scores its query rows against every key. The sum runs over all pairs, so
  SL(Q, K) = SL(K, Q): the sigmoid form has no direction. queries, keys: [N, D] normalised."""
  n = check_embeddings(queries=queries, keys=keys)
  lab = _labels(n, labels, axis_name)
  total = _rows("sigmoid", queries, keys, scale, bias, lab, lab, options.block_size, axis_name,
                options.exchange).sum()
  return psum(total, axis_name) / psum(n, axis_name)


@reads("block_size", "exchange")
def siglip_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale, logit_bias, *,
                labels=None, options: LossOptions = LossOptions(),
                axis_name: AxisName = None) -> jax.Array:
  """SigLIP (docs/methods.md §7): −(1/B) Σ_i Σ_j log σ(z_ij (t·I_i·T_j + b)), z = +1 on the diagonal
  (or for equal `labels`), −1 elsewhere. logit_scale: the multiplier t = exp(t') (t' init
  log 10); logit_bias: b (init −10). open_clip's SigLipLoss sums the same B² terms."""
  return sigmoid_query_loss(image_emb, text_emb, logit_scale, logit_bias, labels=labels,
                            options=options, axis_name=axis_name)


def _query_term(queries, keys, scale, bias, labels, options: LossOptions, axis_name):
  """One query-side term of CLIP-3Modal / DRAFT in `options.form`: CE_rows (both directions
  averaged with `bidirectional`) or the sigmoid form with the base's bias (§7b)."""
  if options.form == "softmax":
    return query_loss(queries, keys, scale, labels=labels, options=options, axis_name=axis_name)
  if bias is None:
    raise ValueError("the sigmoid form needs the base's logit_bias (a SigLIP model)")
  return sigmoid_query_loss(queries, keys, scale, bias, labels=labels, options=options,
                            axis_name=axis_name)


@reads("form", "block_size", "exchange")
def clip_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale, logit_bias=None, *,
              labels=None, options: LossOptions = LossOptions(),
              axis_name: AxisName = None) -> jax.Array:
  """CLIP's symmetric InfoNCE, ½(CE(L) + CE(Lᵀ)) with L = s·I Tᵀ (+ bias) (docs/methods.md §1);
  with `options.form="sigmoid"`, SigLIP's loss with the bias instead (`siglip_loss`).

  image_emb, text_emb: [N, D] L2-normalised. logit_scale: the multiplier s. labels: optional
  int [N]; samples with equal labels are positives of each other (UniCL targets, §4; pass image
  ids to treat captions of the same image as positives). Returns a scalar.
  """
  check_embeddings(image_emb=image_emb, text_emb=text_emb)
  both = dataclasses.replace(options, bidirectional=options.form == "softmax")
  return _query_term(image_emb, text_emb, logit_scale, logit_bias, labels, both, axis_name)


@reads("block_size", "exchange")
def unicl_loss(image_emb: jax.Array, text_emb: jax.Array, labels, logit_scale, *,
               options: LossOptions = LossOptions(), axis_name: AxisName = None) -> jax.Array:
  """UniCL (methods.md §4): targets A_ij = 1[y_i = y_j], rows normalised, both directions averaged.
  Samples without a class must carry a label unique across the global batch (and hosts)."""
  return clip_loss(image_emb, text_emb, logit_scale, labels=labels, options=options,
                   axis_name=axis_name)


@reads("form", "bidirectional", "block_size", "exchange")
def three_tower_loss(image_emb: jax.Array, text_emb: jax.Array, dialogue_emb: jax.Array,
                     logit_scale, a: float = 0.65, *, labels=None, logit_bias=None,
                     options: LossOptions = LossOptions(),
                     axis_name: AxisName = None) -> jax.Array:
  """CLIP-3Modal, seed 001 eq. 4.3.1 (docs/methods.md §2):
  a·CE_rows(s·G(z) I(x)ᵀ) + (1−a)·CE_rows(s·G(z) T(y)ᵀ), dialogue rows as queries.
  `bidirectional` averages each term with its transposed direction; `form="sigmoid"` uses
  SL(G(z), ·) with `logit_bias` instead of CE_rows (§7b). All [N, D] normalised."""
  check_embeddings(image_emb=image_emb, text_emb=text_emb, dialogue_emb=dialogue_emb)
  term = functools.partial(_query_term, scale=logit_scale, bias=logit_bias, labels=labels,
                           options=options, axis_name=axis_name)
  return a * term(dialogue_emb, image_emb) + (1 - a) * term(dialogue_emb, text_emb)


@reads("form", "bidirectional", "block_size", "exchange")
def draft_contrastive_loss(image_emb: jax.Array, caption_emb: jax.Array, dialogue_emb: jax.Array,
                           logit_scale, a: float = 0.65, *, labels=None, logit_bias=None,
                           options: LossOptions = LossOptions(),
                           axis_name: AxisName = None) -> jax.Array:
  """DRAFT's L_con, seed 001 eq. 4.4.1 (docs/methods.md §3): texts as queries against the images,
  a·CE_rows(s·T(z) I(x)ᵀ) + (1−a)·CE_rows(s·T(y) I(x)ᵀ); `form="sigmoid"`: SL(T(·), I) with
  `logit_bias` (§7b)."""
  check_embeddings(image_emb=image_emb, caption_emb=caption_emb, dialogue_emb=dialogue_emb)
  term = functools.partial(_query_term, scale=logit_scale, bias=logit_bias, labels=labels,
                           options=options, axis_name=axis_name)
  return a * term(dialogue_emb, image_emb) + (1 - a) * term(caption_emb, image_emb)


@reads("block_size", "exchange")
def mult_loss(image_emb: jax.Array, text_emb: jax.Array, fused_emb: jax.Array, logit_scale,
              a: float, b: float, *, options: LossOptions = LossOptions(),
              axis_name: AxisName = None) -> jax.Array:
  """MulT three-way loss (docs/methods.md §6): a·CEsym(I,T) + b·CEsym(T,M) + (1−a−b)·CEsym(M,I)."""
  if not (0 < a and 0 < b and a + b < 1):
    raise ValueError(f"mult_loss needs 0 < a, 0 < b and a + b < 1, got a={a}, b={b}")
  check_embeddings(image_emb=image_emb, text_emb=text_emb, fused_emb=fused_emb)
  kw = dict(options=options, axis_name=axis_name)
  return (a * clip_loss(image_emb, text_emb, logit_scale, **kw)
          + b * clip_loss(text_emb, fused_emb, logit_scale, **kw)
          + (1 - a - b) * clip_loss(fused_emb, image_emb, logit_scale, **kw))


@reads("block_size", "exchange")
def text_infonce(q: jax.Array, p: jax.Array, negatives: jax.Array | None = None,
                 tau: float = 0.05, *, options: LossOptions = LossOptions(),
                 axis_name: AxisName = None) -> jax.Array:
  """jina-style text–text loss (docs/methods.md §5) with cosine similarities over temperature τ.

  pairs:     InfoNCE(q→p) + InfoNCE(p→q)  (summed, not averaged)
  InfoNCE+:  with negatives [N, m, D], every hard negative of the global batch joins the
             candidates of the q→p direction only.
  q, p: [N, D] L2-normalised; negatives: [N, m, D] L2-normalised. Returns a scalar.
  """
  n = check_embeddings(q=q, p=p)
  lab = _labels(n, None, axis_name)
  rows = functools.partial(_rows, "softmax", scale=1.0 / tau, bias=None, q_labels=lab,
                           block_size=options.block_size, axis_name=axis_name,
                           exchange=options.exchange)
  if negatives is None:  # both directions against the other side's global batch
    return psum(rows(q, p, k_labels=lab).sum() + rows(p, q, k_labels=lab).sum(),
                axis_name) / psum(n, axis_name)
  if negatives.ndim != 3 or negatives.shape[0] != n or negatives.shape[2] != q.shape[1]:
    raise ValueError(f"negatives must be [{n}, m, {q.shape[1]}], got {list(negatives.shape)}")
  # this shard's candidates for q: its positives and its hard negatives (label -1, never a
  # target); gathered or sent round the ring together, so every device's negatives reach
  # every query
  neg = negatives.reshape(-1, q.shape[1]).astype(p.dtype)
  keys = jnp.concatenate([p, neg])
  key_labels = jnp.concatenate([lab, jnp.full((neg.shape[0],), -1, jnp.int32)])
  q_to_p = rows(q, keys, k_labels=key_labels).sum()
  p_to_q = rows(p, q, k_labels=lab).sum()
  return psum(q_to_p + p_to_q, axis_name) / psum(n, axis_name)
