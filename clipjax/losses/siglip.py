"""SigLIP's pairwise sigmoid loss over the global batch (METHODS §7)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clipjax.losses.contrastive import check_embeddings
from clipjax.losses.tiled import HIGHEST
from clipjax.parallel.collectives import AxisName, all_gather, psum, shard_offset


def siglip_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale, logit_bias, *,
                axis_name: AxisName = None) -> jax.Array:
  """-(1/B) Σ_i Σ_j log σ(z_ij (t·I_i·T_j + b)), z = +1 on the diagonal, −1 elsewhere.

  image_emb, text_emb: [N, D] L2-normalised. logit_scale: the multiplier t = exp(t')
  (t' init log 10); logit_bias: b (init −10). Each device scores its image rows against all
  texts of the global batch (open_clip's SigLipLoss sums the same B² terms). Returns a scalar.
  """
  n = check_embeddings(image_emb=image_emb, text_emb=text_emb)
  texts = all_gather(text_emb, axis_name).astype(jnp.float32)
  logits = (jnp.asarray(logit_scale, jnp.float32)
            * jnp.dot(image_emb.astype(jnp.float32), texts.T, precision=HIGHEST)
            + jnp.asarray(logit_bias, jnp.float32))
  rows = shard_offset(n, axis_name) + jnp.arange(n)
  z = jnp.where(rows[:, None] == jnp.arange(texts.shape[0])[None, :], 1.0, -1.0)
  return psum(-jax.nn.log_sigmoid(z * logits).sum(), axis_name) / psum(n, axis_name)
