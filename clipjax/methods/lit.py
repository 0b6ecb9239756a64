"""LiT (Zhai et al., 2022): the CLIP loss with a locked (frozen) pretrained image tower, so
image embeddings can be computed once per image (data.cache_frozen). On a SigLIP base,
lit.form=sigmoid trains with SigLIP's pairwise sigmoid instead, its t and b trained as the
CLIP loss trains s (docs/methods.md §7b)."""
from __future__ import annotations

from clipjax import losses
from clipjax.methods.base import register
from clipjax.methods.context import logit_bias, logit_scale, same_image_labels
from clipjax.methods.clip import Clip
from clipjax.parallel.mesh import on_mesh


@register
class LiT(Clip):
  name = "lit"
  caches_frozen_images = True
  loss_forms = ("softmax", "sigmoid")
  loss_functions = (losses.clip_loss,)  # in its `form`: SigLIP's sigmoid with form=sigmoid
  settings = {"form": "softmax", "same_image_positives": False}

  def configure(self, c):
    c.freeze = ("^clip/visual/",)

  def loss(self, ctx, params, emb, batch, key):
    if ctx.loss.form != "sigmoid":
      return super().loss(ctx, params, emb, batch, key)
    scale, bias = logit_scale(params), logit_bias(params)
    out = on_mesh(losses.clip_loss, ctx.mesh)(emb["image"], emb["caption"], scale, bias,
                                              options=ctx.loss, **same_image_labels(ctx, batch))
    return out, {"scale": scale, "bias": bias}
