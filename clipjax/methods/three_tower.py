"""CLIP-3Modal (seed 001 §4.3, methods.md §2): a pretrained CLIP's image tower I and text tower T
stay frozen; a third (dialogue) tower G, initialised as a copy of T, is trained with
a·CE(G(z), I) + (1−a)·CE(G(z), T(y)) on the concatenated dialogue. Evaluation blends T and G
on the same caption; G is exported as the text tower of a standalone CLIP. On a SigLIP base,
three_tower.form=sigmoid scores both terms with the base's frozen t and b (docs/methods.md §7b)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax import losses
from clipjax.evaluate.embed import clip_encoders
from clipjax.methods.base import Method, pretrained_clip_base, register
from clipjax.methods.context import (
  Evaluation,
  apply_tower,
  embed_image_text,
  logit_bias,
  logit_scale,
)
from clipjax.models import CLIP, TextTransformer
from clipjax.models.clip import l2_normalize
from clipjax.models.configs import HFTextConfig
from clipjax.models.hf_text import HFTextTower
from clipjax.parallel.mesh import on_mesh


def dialogue_tower(model: CLIP) -> nn.Module:
  """G: a text tower of the same architecture as the model's."""
  cfg = model.cfg
  if isinstance(cfg.text, HFTextConfig):
    return HFTextTower(cfg.text, cfg.embed_dim, model.dtype, model.remat, model.scan_layers)
  return TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu, model.dtype, model.remat,
                         model.attention, model.scan_layers)


def init_dialogue_params(clip_params: dict) -> dict:
  """G starts as a copy of T: every top-level entry but `visual` and logits (an HF tower: the
  `text` subtree). Real copies: the train step donates its state, and a buffer shared by two
  leaves would be donated twice."""
  text = {k: v for k, v in clip_params.items() if k not in ("visual", "logit_scale", "logit_bias")}
  if set(text) == {"text"}:
    text = text["text"]
  return jax.tree.map(lambda x: jnp.array(x, copy=True), text)


def dialogue_as_text_tower(clip_params: dict, dialogue_params: dict) -> dict:
  """CLIP params with G in place of T (the inverse of `init_dialogue_params`)."""
  if "text" in clip_params:  # HF text tower
    return dict(clip_params, text=dialogue_params)
  return dict(clip_params, **dialogue_params)


@register
class ThreeTower(Method):
  name = "three_tower"
  loss_functions = (losses.three_tower_loss,)
  text_fields = ("caption", "dialogue")
  caches_frozen_images = True
  caches_frozen_captions = True  # T is frozen as well
  adapts_pretrained = True
  extra_towers = ("dialogue",)
  lora_towers = ("clip", "dialogue")  # G starts as a copy of the pretrained T
  loss_forms = ("softmax", "sigmoid")
  settings = {"a": 0.65,  # weight of CE(G(z), I); CE(G(z), T(y)) gets 1 − a
              "bidirectional": False, "form": "softmax", "dialogue_mode": "concat"}

  def configure(self, c):
    c.freeze = ("^clip/",)  # I, T and the logit scale stay at the pretrained values
    c.base = pretrained_clip_base()

  def text_towers(self):
    return {"caption": "text", "dialogue": "dialogue"}  # T frozen, G trained

  def init_params(self, model, clip_params, cfg):
    return {"dialogue": init_dialogue_params(clip_params)}

  def embed(self, ctx, params, batch):
    out = embed_image_text(ctx, params, batch)
    out["dialogue"] = l2_normalize(apply_tower(ctx, params, "dialogue",
                                               dialogue_tower(ctx.model), batch["dialogue"]))
    return out

  def loss(self, ctx, params, emb, batch, key):
    del batch, key
    out = on_mesh(losses.three_tower_loss, ctx.mesh)(
        emb["image"], emb["caption"], emb["dialogue"], logit_scale(params), a=ctx.cfg.a,
        logit_bias=logit_bias(params), options=ctx.loss)
    return out, {}

  def evaluate(self, model, params, base_params, cfg):
    # The third tower as a standalone CLIP: the base image tower + G as its text tower.
    third = dialogue_as_text_tower(base_params, params["dialogue"])
    return Evaluation(models={"base": clip_encoders(model, base_params),
                              "third": clip_encoders(model, third)},
                      blend=("base", "third"), exports={"third_tower": ("third_tower", third)})
