"""SigLIP (METHODS §7): a pairwise sigmoid loss with a learnable bias; open_clip's init of
t' = log 10 and b = −10."""
from __future__ import annotations

import math

from clipjax import losses
from clipjax.methods.base import Method, logit_scale, register
from clipjax.parallel.mesh import on_mesh


@register
class SigLIP(Method):
  name = "siglip"

  def configure(self, c):
    c.model.init_logit_scale = math.log(10.0)
    c.model.init_logit_bias = -10.0

  def loss(self, ctx, params, emb, batch, key):
    del batch, key
    scale, bias = logit_scale(params), params["clip"]["logit_bias"]
    out = on_mesh(losses.siglip_loss, ctx.mesh)(emb["image"], emb["caption"], scale, bias)
    return out, {"scale": scale, "bias": bias}
