"""CLIP (docs/methods.md §1): the symmetric InfoNCE of every image–caption pair of the global batch
against all others; with clip.same_image_positives, every caption of an image is a positive."""
from __future__ import annotations

from clipjax import losses
from clipjax.methods.base import Method, register
from clipjax.methods.context import logit_scale, same_image_labels
from clipjax.parallel.mesh import on_mesh


@register
class Clip(Method):
  name = "clip"
  loss_functions = (losses.clip_loss,)
  settings = {"same_image_positives": False}

  def loss(self, ctx, params, emb, batch, key):
    del key
    scale = logit_scale(params)
    out = on_mesh(losses.clip_loss, ctx.mesh)(emb["image"], emb["caption"], scale,
                                              options=ctx.loss,
                                              **same_image_labels(ctx, batch))
    return out, {"scale": scale}
