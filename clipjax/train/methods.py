"""Per-method embeddings + loss of one global batch (METHODS §1–5, §7).

Every method is split in two so that gradient accumulation can keep all negatives
(GradCache, see `clipjax.train.step`):
  embed(params, batch) -> embeddings   row-wise: output row i depends on input row i only;
                                        a pytree shaped like the batch's streams;
  loss(params, embeddings, batch, key) -> (scalar, logged terms)
                                        the global-batch loss; reads only scalars (logit
                                        scale / bias) from params and labels from the batch.

Parameters are `{"clip": CLIP params}` plus, for CLIP-3Modal, `{"dialogue": text-tower params}`
(the third tower G, initialised from the text tower). Towers run under `jit` on batch-sharded
global arrays; losses run under `shard_map` (`on_mesh`) with all-gathered negatives.

Batches: image–text methods read `{"image", "caption", ["dialogue"], "image_id", "label"}`;
precomputed `image_embedding` / `caption_embedding` rows (unit; the frozen-tower cache)
replace `image` / `caption`. The jina-style `multitask` reads two streams, `{"text": {"query", "positive", ["negatives"]},
"image_text": {"image", "caption", ...}}`, each with its own batch size.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from clipjax import losses
from clipjax.data.transforms import normalize_on_device
from clipjax.models import CLIP, TextTransformer
from clipjax.models.hf_text import HFTextTower
from clipjax.models.mult import MulTConfig, MulTFusion
from clipjax.models.registry import HFTextConfig
from clipjax.parallel.mesh import on_mesh

METHODS = ("clip", "lit", "siglip", "unicl", "draft", "three_tower", "multitask", "mult")
# The token-id fields of each method's batch, per stream ("" = the batch itself).
TEXT_FIELDS = {"clip": {"": ("caption",)}, "lit": {"": ("caption",)},
               "siglip": {"": ("caption",)}, "unicl": {"": ("caption",)},
               "draft": {"": ("caption", "dialogue")},
               "three_tower": {"": ("caption", "dialogue")},
               "mult": {"": ("caption",)},
               "multitask": {"text": ("query", "positive", "negatives"),
                             "image_text": ("caption",)}}
# Frozen towers whose embeddings can be computed once per image (data.cache_frozen).
CACHEABLE_IMAGE_TOWER = ("lit", "draft", "three_tower")

Embeddings = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Method:
  embed: Callable[[Any, dict], Embeddings]
  loss: Callable[[Any, Embeddings, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

  def loss_fn(self, params, batch, key):
    """The whole objective: loss(params, embed(params, batch), batch, key)."""
    return self.loss(params, self.embed(params, batch), batch, key)


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def dialogue_tower(model: CLIP) -> nn.Module:
  cfg = model.cfg
  if isinstance(cfg.text, HFTextConfig):
    return HFTextTower(cfg.text, cfg.embed_dim, model.dtype, model.remat)
  return TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu, model.dtype, model.remat)


def init_dialogue_params(clip_params: dict) -> dict:
  """G starts as a copy of the text tower T: every top-level entry but `visual` and logits
  (an HF tower: the `text` subtree). Real copies: the train step donates its state, and a
  buffer shared by two leaves would be donated twice."""
  text = {k: v for k, v in clip_params.items() if k not in ("visual", "logit_scale", "logit_bias")}
  if set(text) == {"text"}:
    text = text["text"]
  return jax.tree.map(lambda x: jnp.array(x, copy=True), text)


def mult_tower(model: CLIP, loss_cfg: Any) -> nn.Module:
  """The MulT fusion tower of the `mult` method; its size comes from `loss.mult`."""
  text = model.cfg.text
  mult_cfg = MulTConfig(**dict(loss_cfg.get("mult") or {}),
                        vocab_size=text.vocab_size, context_length=text.context_length,
                        pad_id=getattr(text, "pad_token_id", 0))
  return MulTFusion(mult_cfg, model.cfg.embed_dim, model.dtype)


def init_mult_params(model: CLIP, loss_cfg: Any, seed: int) -> dict:
  size = model.cfg.vision.image_size
  tower = mult_tower(model, loss_cfg)
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  ids = jnp.zeros((1, tower.cfg.context_length), jnp.int32)
  return jax.jit(tower.init)(jax.random.key(seed + 7), images, ids)["params"]


def dialogue_as_text_tower(clip_params: dict, dialogue_params: dict) -> dict:
  """CLIP params with G in place of the text tower (the inverse of `init_dialogue_params`)."""
  if "text" in clip_params:  # HF text tower
    return dict(clip_params, text=dialogue_params)
  return dict(clip_params, **dialogue_params)


def make_method(method: str, model: CLIP, mesh: Mesh, cfg: Any) -> Method:
  """cfg: the `loss` config block (a, bidirectional, mmd settings, same_image_positives,
  block_size, tau)."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
  block = cfg.get("block_size") or None
  apply = lambda p, x, fn: model.apply({"params": p}, x, method=fn)

  def encode_text(params, ids):
    return _unit(apply(params["clip"], ids, model.encode_text))

  def image_text(params, batch) -> Embeddings:
    if "caption_embedding" in batch:  # cached outputs of frozen towers (float32, as the
      caption = batch["caption_embedding"]  # towers' outputs in every compute dtype)
    else:
      caption = encode_text(params, batch["caption"])
    if "image_embedding" in batch:
      image = batch["image_embedding"]
    else:
      pixels = normalize_on_device(batch["image"])  # uint8 from the pipeline
      image = _unit(apply(params["clip"], pixels, model.encode_image))
    return {"image": image, "caption": caption}

  def embed(params, batch) -> Embeddings:
    if method == "multitask":
      text = batch["text"]
      out = {"query": encode_text(params, text["query"]),
             "positive": encode_text(params, text["positive"])}
      if "negatives" in text:
        n, m, length = text["negatives"].shape
        out["negatives"] = encode_text(params, text["negatives"].reshape(n * m, length)
                                       ).reshape(n, m, -1)
      return {"text": out, "image_text": image_text(params, batch["image_text"])}
    out = image_text(params, batch)
    if method == "draft":
      out["dialogue"] = encode_text(params, batch["dialogue"])
    elif method == "three_tower":
      out["dialogue"] = _unit(dialogue_tower(model).apply({"params": params["dialogue"]},
                                                          batch["dialogue"]))
    elif method == "mult":  # the fused view M of each image–caption pair
      out["fused"] = _unit(mult_tower(model, cfg).apply(
          {"params": params["mult"]}, normalize_on_device(batch["image"]), batch["caption"]))
    return out

  def same_image(batch):
    if not cfg.get("same_image_positives"):
      return {}
    return {"labels": batch["image_id"].astype(jnp.int32)}

  def loss(params, emb, batch, key):
    clip = params["clip"]
    scale = jnp.exp(clip["logit_scale"])
    if method == "multitask":  # METHODS §5: text–text (fixed τ) + CLIP, one backward pass
      text, pairs = emb["text"], emb["image_text"]
      negatives = {"negatives": text["negatives"]} if "negatives" in text else {}
      tt = on_mesh(losses.text_infonce, mesh)(text["query"], text["positive"], tau=cfg.tau,
                                              **negatives)
      ti = on_mesh(losses.clip_loss, mesh)(pairs["image"], pairs["caption"], scale,
                                           block_size=block, **same_image(batch["image_text"]))
      return tt + ti, {"text_text": tt, "text_image": ti, "scale": scale}
    image, caption = emb["image"], emb["caption"]
    if method in ("clip", "lit"):
      out = on_mesh(losses.clip_loss, mesh)(image, caption, scale, block_size=block,
                                            **same_image(batch))
      return out, {"scale": scale}
    if method == "siglip":
      out = on_mesh(losses.siglip_loss, mesh)(image, caption, scale, clip["logit_bias"])
      return out, {"scale": scale, "bias": clip["logit_bias"]}
    if method == "unicl":
      out = on_mesh(losses.unicl_loss, mesh)(image, caption, batch["label"].astype(jnp.int32),
                                             scale, block_size=block)
      return out, {"scale": scale}
    if method == "draft":
      out, aux = on_mesh(losses.draft_loss, mesh)(
          image, caption, emb["dialogue"], scale, key=key, a=cfg.a, mmd_weight=cfg.mmd_weight,
          mmd=losses.MMDConfig(**cfg.mmd), bidirectional=cfg.bidirectional, block_size=block,
          **same_image(batch))
      return out, dict(aux)
    if method == "mult":  # METHODS §6: a·CE(I,T) + b·CE(T,M) + (1−a−b)·CE(M,I)
      out = on_mesh(losses.mult_loss, mesh)(image, caption, emb["fused"], scale, a=cfg.a,
                                            b=cfg.b, block_size=block)
      return out, {"scale": scale}
    # three_tower: frozen I and T; G = the dialogue tower.
    out = on_mesh(losses.three_tower_loss, mesh)(image, caption, emb["dialogue"], scale, a=cfg.a,
                                                 bidirectional=cfg.bidirectional,
                                                 block_size=block)
    return out, {}

  return Method(embed, loss)
