"""What a method's `embed` and `loss` close over (`Context`), the bound objective the train
step calls (`Objective`), the models a method evaluates (`Evaluation`), and the tower helpers
every method shares: applying a tower with its LoRA adapters, unit image / text embeddings,
the logit scale and bias.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from clipjax.evaluate.embed import Encoders
from clipjax.losses import LossOptions
from clipjax.models import CLIP
from clipjax.models.clip import l2_normalize
from clipjax.models.lora import applying_lora, lora_variables, merge_lora
from clipjax.options import LoraOptions

Embeddings = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Context:
  """What `embed` and `loss` close over: the model, the device mesh, the method's settings
  (`config.<method>`), the fixed settings every loss of the step gets (`methods.base.
  loss_options`: form, bidirectional, tiles, exchange), in a training step the step's key for
  the towers' own randomness (patch and LoRA dropout; None elsewhere), and the LoRA settings
  (None: off)."""
  model: CLIP
  mesh: Mesh
  cfg: Any
  loss: LossOptions = LossOptions()
  key: jax.Array | None = None
  lora: LoraSettings | None = None


@dataclasses.dataclass(frozen=True)
class LoraSettings:
  """`lora.alpha / lora.rank` and `lora.dropout` of a run with adapters."""
  scale: float
  dropout: float = 0.0

  @classmethod
  def of(cls, lora: LoraOptions) -> LoraSettings | None:
    if not lora.rank:
      return None
    return cls(lora.alpha / lora.rank, lora.dropout)


@dataclasses.dataclass(frozen=True)
class Objective:
  """A method bound to a model and mesh, as the train step uses it. `embed(params, batch,
  key=None)`: with a key, the towers draw their training randomness from it."""
  embed: Callable[..., Embeddings]
  loss: Callable[[Any, Embeddings, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

  def loss_fn(self, params, batch, key):
    """The whole objective: loss(params, embed(params, batch, key), batch, key)."""
    return self.loss(params, self.embed(params, batch, key), batch, key)


@dataclasses.dataclass
class Evaluation:
  """The models evaluated side by side after training, the pair whose text embeddings are
  blended (`config.eval.betas`), and extra exports: name -> (subdirectory, CLIP params)."""
  models: dict[str, Encoders]
  blend: tuple[str, str] | None = None
  exports: dict[str, tuple[str, Any]] = dataclasses.field(default_factory=dict)


def with_lora_merged(params: dict, lora: LoraOptions) -> dict:
  """`params` with the LoRA adapters `params["lora"]` merged into the weights they adapt (as
  they are without adapters)."""
  if "lora" not in params:
    return params
  return merge_lora({k: v for k, v in params.items() if k != "lora"}, params["lora"],
                    lora.alpha / lora.rank)


def apply_tower(ctx: Context, params: dict, tower: str, module: nn.Module, *args,
                rngs: dict | None = None, **kwargs):
  """`module.apply` with the weights `params[tower]` and, in a LoRA run, the tower's adapters
  (models/lora.py; with lora.dropout, dropped from the step's key in training)."""
  variables = {"params": params[tower]}
  if ctx.lora is None or "lora" not in params:
    return module.apply(variables, *args, rngs=rngs, **kwargs)
  variables["lora"] = lora_variables(params["lora"], tower)
  if ctx.lora.dropout and ctx.key is not None:
    rngs = dict(rngs or {}, lora_dropout=jax.random.fold_in(ctx.key, 2))
  with applying_lora(ctx.lora.scale, ctx.lora.dropout):
    return module.apply(variables, *args, rngs=rngs, **kwargs)


def encode_text(ctx: Context, params: dict, ids: jax.Array) -> jax.Array:
  """[N, L] token ids -> [N, D] unit embeddings of the CLIP text tower."""
  return l2_normalize(apply_tower(ctx, params, "clip", ctx.model, ids,
                                  method=ctx.model.encode_text))


def embed_image(ctx: Context, params: dict, batch: dict) -> jax.Array:
  """[N, D] unit image embeddings of the batch's images (or its cached ones), with patch
  dropout from the step's key in training."""
  if "image_embedding" in batch:
    return batch["image_embedding"]
  pixels = ctx.model.cfg.image_preprocess.normalize_on_device(batch["image"])
  rngs = ({"patch_dropout": jax.random.fold_in(ctx.key, 1)}
          if ctx.key is not None and ctx.model.patch_dropout else None)
  return l2_normalize(apply_tower(ctx, params, "clip", ctx.model, pixels, rngs=rngs,
                                  method=ctx.model.encode_image))


def embed_image_text(ctx: Context, params: dict, batch: dict) -> Embeddings:
  """{"image": [N, D], "caption": [N, D]} unit embeddings (or the cached ones, float32 as the
  towers' outputs in every compute dtype)."""
  if "caption_embedding" in batch:
    caption = batch["caption_embedding"]
  else:
    caption = encode_text(ctx, params, batch["caption"])
  return {"image": embed_image(ctx, params, batch), "caption": caption}


def logit_scale(params: dict) -> jax.Array:
  return jnp.exp(params["clip"]["logit_scale"])


def logit_bias(params: dict) -> jax.Array | None:
  """The SigLIP bias b, or None for a model without one."""
  return params["clip"].get("logit_bias")


def same_image_labels(ctx: Context, batch: dict) -> dict:
  """`labels=image_id` when captions of one image are all positives (`same_image_positives`)."""
  if not ctx.cfg.get("same_image_positives"):
    return {}
  return {"labels": batch["image_id"].astype(jnp.int32)}
