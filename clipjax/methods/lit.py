"""LiT (Zhai et al., 2022): the CLIP loss with a locked (frozen) pretrained image tower, so
image embeddings can be computed once per image (data.cache_frozen)."""
from __future__ import annotations

from clipjax.methods.base import register
from clipjax.methods.clip import Clip


@register
class LiT(Clip):
  name = "lit"
  caches_frozen_images = True

  def configure(self, c):
    c.freeze = ("^clip/visual/",)
