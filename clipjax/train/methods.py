"""Per-method embedding + loss of one global batch (METHODS §1–5, §7).

Parameters are `{"clip": CLIP params}` plus, for CLIP-3Modal, `{"dialogue": text-tower
params}` (the third tower G, initialised from the text tower). Towers run under `jit` on the
batch-sharded global arrays; the loss runs under `shard_map` (`on_mesh`) with all-gathered
negatives, so every device sees the whole global batch.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from clipjax import losses
from clipjax.data.transforms import normalize_on_device
from clipjax.models import CLIP, TextTransformer
from clipjax.parallel.mesh import on_mesh

METHODS = ("clip", "lit", "siglip", "unicl", "draft", "three_tower")
# The dataset text fields each method reads (besides the image).
TEXT_FIELDS = {"clip": ("caption",), "lit": ("caption",), "siglip": ("caption",),
               "unicl": ("caption",), "draft": ("caption", "dialogue"),
               "three_tower": ("caption", "dialogue")}

LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def dialogue_tower(model: CLIP) -> TextTransformer:
  cfg = model.cfg
  return TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu, model.dtype, model.remat)


def init_dialogue_params(clip_params: dict) -> dict:
  """G starts as a copy of the text tower T: every top-level entry but `visual` and logits.
  Real copies: the train step donates its state, and a buffer shared by two leaves would be
  donated twice."""
  text = {k: v for k, v in clip_params.items() if k not in ("visual", "logit_scale", "logit_bias")}
  return jax.tree.map(lambda x: jnp.array(x, copy=True), text)


def make_loss_fn(method: str, model: CLIP, mesh: Mesh, cfg: Any) -> LossFn:
  """loss_fn(params, batch, key) -> (scalar loss, dict of logged terms).

  cfg: the `loss` config block (a, bidirectional, mmd settings, same_image_positives,
  block_size).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  block = cfg.get("block_size") or None
  apply = lambda p, x, fn: model.apply({"params": p}, x, method=fn)

  def towers(params, batch):
    clip = params["clip"]
    pixels = normalize_on_device(batch["image"])  # uint8 from the pipeline
    image = _unit(apply(clip, pixels, model.encode_image))
    caption = _unit(apply(clip, batch["caption"], model.encode_text))
    return clip, image, caption

  def labels(batch):
    return batch["image_id"].astype(jnp.int32) if cfg.get("same_image_positives") else None

  def loss_fn(params, batch, key):
    clip, image, caption = towers(params, batch)
    scale = jnp.exp(clip["logit_scale"])
    if method in ("clip", "lit"):
      kw = {"labels": labels(batch)} if cfg.get("same_image_positives") else {}
      loss = on_mesh(losses.clip_loss, mesh)(image, caption, scale, block_size=block, **kw)
      return loss, {"scale": scale}
    if method == "siglip":
      loss = on_mesh(losses.siglip_loss, mesh)(image, caption, scale, clip["logit_bias"])
      return loss, {"scale": scale, "bias": clip["logit_bias"]}
    if method == "unicl":
      loss = on_mesh(losses.unicl_loss, mesh)(image, caption, batch["label"].astype(jnp.int32),
                                              scale, block_size=block)
      return loss, {"scale": scale}
    if method == "draft":
      dialogue = _unit(apply(clip, batch["dialogue"], model.encode_text))
      mmd = losses.MMDConfig(**cfg.mmd)
      kw = {"labels": labels(batch)} if cfg.get("same_image_positives") else {}
      loss, aux = on_mesh(losses.draft_loss, mesh)(
          image, caption, dialogue, scale, key=key, a=cfg.a, mmd_weight=cfg.mmd_weight, mmd=mmd,
          bidirectional=cfg.bidirectional, block_size=block, **kw)
      return loss, dict(aux)
    # three_tower: frozen I and T; G = the dialogue tower.
    dialogue = _unit(dialogue_tower(model).apply({"params": params["dialogue"]}, batch["dialogue"]))
    loss = on_mesh(losses.three_tower_loss, mesh)(image, caption, dialogue, scale, a=cfg.a,
                                                  bidirectional=cfg.bidirectional,
                                                  block_size=block)
    return loss, {}

  return loss_fn
