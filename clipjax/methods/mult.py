"""CLIP with a MulT fusion tower (seed 001 §4.2, docs/methods.md §6): image, text and fusion towers
trained jointly with a·CE(I,T) + b·CE(T,M) + (1−a−b)·CE(M,I), where M is the fused view of
each image–caption pair. Retrieval evaluates the image and text towers, as for clip (the
thesis found no gain over plain CLIP: docs/training.md)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax import losses
from clipjax.methods.base import Method, register
from clipjax.methods.context import embed_image_text, logit_scale
from clipjax.models import CLIP
from clipjax.models.clip import l2_normalize
from clipjax.models.mult import MulTConfig, MulTFusion
from clipjax.parallel.mesh import on_mesh


def mult_tower(model: CLIP, mult_cfg) -> nn.Module:
  """The fusion tower; its size comes from `mult.tower`, its vocabulary from the text tower."""
  text = model.cfg.text
  mult_cfg = MulTConfig(**dict(mult_cfg.tower),
                        vocab_size=text.vocab_size, context_length=text.context_length,
                        pad_id=getattr(text, "pad_token_id", 0))
  return MulTFusion(mult_cfg, model.cfg.embed_dim, model.dtype)


def init_mult_params(model: CLIP, mult_cfg, seed: int) -> dict:
  size = model.cfg.vision.image_size
  tower = mult_tower(model, mult_cfg)
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  ids = jnp.zeros((1, tower.cfg.context_length), jnp.int32)
  return jax.jit(tower.init)(jax.random.key(seed + 7), images, ids)["params"]


@register
class MulT(Method):
  name = "mult"
  loss_functions = (losses.mult_loss,)
  extra_towers = ("mult",)

  settings = {"a": 0.5,   # CE(I, T): the pair retrieval is evaluated on
              "b": 0.25,  # CE(T, M); CE(M, I) gets 1 − a − b
              "tower": {"width": 128, "heads": 4, "layers": 2, "patch_size": 8}}

  def init_params(self, model, clip_params, cfg):
    return {"mult": init_mult_params(model, cfg.settings, cfg.seed)}

  def embed(self, ctx, params, batch):
    out = embed_image_text(ctx, params, batch)
    out["fused"] = l2_normalize(mult_tower(ctx.model, ctx.cfg).apply(
        {"params": params["mult"]}, ctx.model.cfg.image_preprocess.normalize_on_device(batch["image"]), batch["caption"]))
    return out

  def loss(self, ctx, params, emb, batch, key):
    del batch, key
    out = on_mesh(losses.mult_loss, ctx.mesh)(emb["image"], emb["caption"], emb["fused"],
                                              logit_scale(params), a=ctx.cfg.a, b=ctx.cfg.b,
                                              options=ctx.loss)
    return out, {"scale": logit_scale(params)}
