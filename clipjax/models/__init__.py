"""Flax towers with OpenCLIP's layout; `create_model` builds one from the registry."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from clipjax.models.clip import CLIP
from clipjax.models.configs import CLIPConfig
from clipjax.models.naflex import example_images
from clipjax.models.registry import get_model_config, list_models
from clipjax.models.stacking import stack_layers
from clipjax.models.text import TextTransformer
from clipjax.models.vision import VisionTransformer


def create_model(arch: str | CLIPConfig, *, dtype=jnp.float32, remat: bool | str = False,
                 context_length: int | None = None, seed: int = 0, attention: str = "auto",
                 scan_layers: bool = False):
  """Randomly initialised model (open_clip's init scheme for the text tower).

  Returns (model, params) with float32 params; `dtype` is the compute dtype, `attention` the
  attention kernel (`clipjax.models.layers.attention_kernel`), `remat` True or a checkpoint
  policy name (`layers.REMAT_POLICIES`), `scan_layers` the scanned block layout
  (`clipjax.models.stacking`), holding the same random weights as the per-block layout.
  """
  cfg = get_model_config(arch)
  if context_length:
    cfg = cfg.replace(text={"context_length": context_length})
  model = CLIP(cfg, dtype=dtype, remat=remat, attention=attention, scan_layers=scan_layers)
  images = example_images(cfg.vision)
  ids = jnp.zeros((1, cfg.text.context_length), jnp.int32)
  init = lambda m: functools.partial(m.init, jax.random.key(seed), images, ids)
  params = jax.jit(init(CLIP(cfg)))()["params"]  # drawn per block: a seed means one model
  if scan_layers:
    params = stack_layers(params, jax.eval_shape(init(model))["params"])
  return model, params


__all__ = ["CLIP", "CLIPConfig", "TextTransformer", "VisionTransformer", "create_model",
           "get_model_config", "list_models"]
