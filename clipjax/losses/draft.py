"""The full DRAFT objective (seed 001 §4.4, docs/methods.md §3): L_con + λ·L_MMD."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clipjax.losses.contrastive import draft_contrastive_loss
from clipjax.losses.mmd import MMDConfig, mmd2
from clipjax.losses.options import LossOptions, reads
from clipjax.parallel.collectives import AxisName


@reads("form", "bidirectional", "block_size", "exchange")
def draft_loss(image_emb: jax.Array, caption_emb: jax.Array, dialogue_emb: jax.Array,
               logit_scale, *, key: jax.Array | None = None, a: float = 0.65,
               mmd_weight: float = 1.0, mmd: MMDConfig = MMDConfig(), labels=None,
               logit_bias=None, options: LossOptions = LossOptions(),
               axis_name: AxisName = None):
  """L = a·CE_rows(s·T(z)Iᵀ) + (1−a)·CE_rows(s·T(y)Iᵀ) + λ·L_MMD(S, D).

  `form="sigmoid"` (a SigLIP base, docs/methods.md §7b): the two CE_rows terms become SL(·, I) with
  t = logit_scale and b = logit_bias. The MMD samples are then t·T·I + b; the RBF kernel and
  σ (a standard deviation) see only differences of samples, so b cancels and the MMD is the
  one computed from t·T·I.

  image_emb, caption_emb, dialogue_emb: [N, D] L2-normalised (this shard's rows on a mesh).
  logit_scale: the multiplier s (frozen at the pretrained value in DRAFT: the caller passes it
  without gradient). key: PRNG key shared by all devices (rff / subsample estimators).
  options: form, bidirectional (the contrastive terms), block_size and exchange (both terms;
  `losses.ring`, `losses.ring_mmd`).
  L_MMD = sqrt(max(MMD², 0) + 1e-12), or MMD² when `mmd.squared`.
  Returns (loss, aux) with aux = {"contrastive", "mmd2", "mmd", "sigma"} (global values).
  """
  contrastive = draft_contrastive_loss(image_emb, caption_emb, dialogue_emb, logit_scale, a,
                                       labels=labels, logit_bias=logit_bias, options=options,
                                       axis_name=axis_name)
  value, sigmas = mmd2(caption_emb, dialogue_emb, image_emb, logit_scale, key=key, config=mmd,
                       options=options, axis_name=axis_name)
  mmd_term = value if mmd.squared else jnp.sqrt(jnp.maximum(value, 0.0) + 1e-12)
  loss = contrastive + mmd_weight * mmd_term
  return loss, {"contrastive": contrastive, "mmd2": value, "mmd": mmd_term, "sigma": sigmas[0]}
