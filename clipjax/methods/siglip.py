"""SigLIP (docs/methods.md §7): a pairwise sigmoid loss with a learnable bias; open_clip's init of
t' = log 10 and b = −10 from scratch, or the loaded SigLIP model's own t and b when fine-tuning
(model.checkpoint)."""
from __future__ import annotations

import math

from clipjax import losses
from clipjax.methods.base import Method, register
from clipjax.methods.context import logit_bias, logit_scale, same_image_labels
from clipjax.parallel.mesh import on_mesh


@register
class SigLIP(Method):
  name = "siglip"
  loss_functions = (losses.siglip_loss,)
  settings = {"same_image_positives": False}

  def configure(self, c):
    c.model.init_logit_scale = math.log(10.0)
    c.model.init_logit_bias = -10.0

  def loss(self, ctx, params, emb, batch, key):
    del key
    scale, bias = logit_scale(params), logit_bias(params)
    out = on_mesh(losses.siglip_loss, ctx.mesh)(emb["image"], emb["caption"], scale, bias,
                                                options=ctx.loss,
                                                **same_image_labels(ctx, batch))
    return out, {"scale": scale, "bias": bias}
