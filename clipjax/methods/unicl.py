"""UniCL (docs/methods.md §4): image–label–text contrastive learning; every pair in the global batch
with the same label is a positive."""
from __future__ import annotations

import jax.numpy as jnp

from clipjax import losses
from clipjax.methods.base import Method, register
from clipjax.methods.context import logit_scale
from clipjax.parallel.mesh import on_mesh


@register
class UniCL(Method):
  name = "unicl"
  loss_functions = (losses.unicl_loss,)

  def loss(self, ctx, params, emb, batch, key):
    del key
    scale = logit_scale(params)
    out = on_mesh(losses.unicl_loss, ctx.mesh)(emb["image"], emb["caption"],
                                               batch["label"].astype(jnp.int32), scale,
                                               options=ctx.loss)
    return out, {"scale": scale}
