"""OpenCLIP weights by any name open_clip users write -> a clipjax model and params: the file
or download a name resolves to (`clipjax.convert.pretrained`), its architecture (given, named,
written next to it, or inferred from the tensor shapes), and open_clip's preprocessing."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from clipjax.convert.hf import hf_to_state_dict
from clipjax.convert.hf_siglip_load import hf_siglip_to_state_dict
from clipjax.convert.io import CheckpointError, load_state_dict
from clipjax.convert.openclip import infer_config, state_dict_to_params, to_layer_layout
from clipjax.convert.pretrained import resolve
from clipjax.data.naflex import make_image_transform
from clipjax.models import create_model
from clipjax.models.clip import CLIP
from clipjax.models.configs import CLIPConfig, ImagePreprocess
from clipjax.models.registry import config_from_openclip_json, get_model_config

log = logging.getLogger(__name__)


def _json_next_to(path: Path) -> CLIPConfig | None:
  """The architecture written next to a checkpoint: clipjax's `<stem>.json` (open_clip model
  config) or open_clip's hub-style `open_clip_config.json` (`{"model_cfg": ...}`)."""
  for candidate in (path.with_suffix(".json"), path.parent / "open_clip_config.json"):
    if candidate.is_file() and candidate != path:
      try:
        data = json.loads(candidate.read_text())
        cfg = config_from_openclip_json(data.get("model_cfg", data))
        if data.get("preprocess_cfg"):
          cfg = cfg.replace(preprocess=ImagePreprocess.from_openclip(data["preprocess_cfg"],
                                                                     cfg.image_preprocess))
        return cfg
      except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{candidate} (next to the checkpoint) is not an open_clip model "
                              f"config: {e}") from None
  return None


def resolve_architecture(sd: dict[str, np.ndarray], resolved, arch=None) -> CLIPConfig:
  """In order: `arch`, what the name says (tag, hub config, the JSON next to the file), or
  shape inference. A logit bias in the checkpoint is carried into the config, and so is the
  preprocessing the name's tag or hub config gives (`CLIPConfig.preprocess`)."""
  if arch is not None:
    cfg = get_model_config(arch)
  elif isinstance(resolved.arch, CLIPConfig):
    cfg = resolved.arch
  elif isinstance(resolved.arch, dict):
    cfg = config_from_openclip_json(resolved.arch)
  elif resolved.arch is not None:
    cfg = get_model_config(resolved.arch)
  else:
    cfg = _json_next_to(resolved.path) or infer_config(sd)
  if "logit_bias" in sd:
    cfg = cfg.replace(init_logit_bias=float(np.asarray(sd["logit_bias"]).reshape(())))
  if resolved.preprocess:
    cfg = cfg.replace(preprocess=ImagePreprocess.from_openclip(resolved.preprocess,
                                                               cfg.image_preprocess))
  return cfg


def load_checkpoint(name: str | os.PathLike, pretrained=None, *, arch=None,
                    context_length: int | None = None, cache_dir: str | None = None):
  """Resolves a name (`clipjax.convert.pretrained.resolve`) and reads it. Returns
  (CLIPConfig, params, Resolved)."""
  resolved = resolve(name, pretrained, cache_dir=cache_dir)
  sd = load_state_dict(resolved.path)
  if resolved.format == "hf":
    sd = hf_to_state_dict(sd)
  cfg = resolve_architecture(sd, resolved, arch)
  if resolved.format == "hf_siglip":
    sd = hf_siglip_to_state_dict(sd, cfg)
  if context_length:
    cfg = cfg.replace(text={"context_length": context_length})
  return cfg, state_dict_to_params(sd, cfg, source=resolved.description), resolved


def describe_checkpoint(name: str | os.PathLike, arch=None, pretrained=None) -> CLIPConfig:
  """The architecture of a checkpoint, after checking every tensor against it."""
  return load_checkpoint(name, pretrained, arch=arch)[0]


def load_openclip(name: str | os.PathLike, pretrained: str | os.PathLike | None = None, *,
                  arch: str | CLIPConfig | None = None, context_length: int | None = None,
                  dtype=jnp.float32, remat: bool | str = False, cache_dir: str | None = None,
                  attention: str = "auto", scan_layers: bool = False):
  """Loads OpenCLIP weights by any name open_clip users write. Returns (model, params);
  params are float32.

  name: a file (.safetensors/.pt/.bin/.pth), a directory or `local-dir:DIR`, `hf-hub:ORG/REPO`,
    or an architecture with `pretrained=TAG` (open_clip's tag table) or `pretrained=PATH`.
  arch: open_clip architecture name (or CLIPConfig, or model JSON path); None takes it from
    the name (tag, hub config, the JSON next to the file) or infers it from tensor shapes.
  context_length: build a text tower with this context, interpolating positional embeddings.
  attention: the attention kernel, "auto" | "xla" | "cudnn" (`models.layers.attention_kernel`).
  remat: rematerialise each block: True, or a jax checkpoint policy name
    (`models.layers.REMAT_POLICIES`).
  scan_layers: every transformer tower's blocks under one nn.scan, params stacked on a leading
    layer axis (`models.stacking`); export takes either layout.
  """
  cfg, params, _ = load_checkpoint(name, pretrained, arch=arch, context_length=context_length,
                                   cache_dir=cache_dir)
  return (CLIP(cfg, dtype=dtype, remat=remat, attention=attention, scan_layers=scan_layers),
          to_layer_layout(params, cfg, scan_layers))


def create_model_and_transforms(name: str | os.PathLike, pretrained=None, **kwargs):
  """open_clip's entry point: (model, params, train_transform, eval_transform). The transforms
  use the preprocessing the weights were trained with (mean, std, interpolation, resize mode
  from the tag table or the hub config); keyword arguments go to `load_openclip`."""
  compute = {k: kwargs.pop(k) for k in ("dtype", "remat", "attention", "scan_layers")
             if k in kwargs}
  cfg, params, _ = load_checkpoint(name, pretrained, **kwargs)
  params = to_layer_layout(params, cfg, compute.get("scan_layers", False))
  return (CLIP(cfg, **compute), params, model_transform(cfg, train=True),
          model_transform(cfg, train=False))


def model_transform(cfg: CLIPConfig, *, train: bool = False, uint8: bool = False,
                    max_num_patches: int | None = None):
  """The image transform of an architecture's weights: open_clip's fixed-size preprocessing,
  or for a NaFlex tower the patch-sequence example of `data.naflex` at `max_num_patches`
  (default: the architecture's)."""
  options = cfg.transform_options()
  if max_num_patches:
    options["max_num_patches"] = max_num_patches
  return make_image_transform(cfg.vision.image_size, train=train, uint8=uint8, **options)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
  """How a model is built, whether its weights are loaded or random: the text context
  (None: the architecture's; longer interpolates a checkpoint's positions), compute dtype,
  rematerialisation (a policy name, or True for nothing saved), attention kernel and scanned
  blocks (`create_model` documents each)."""
  context_length: int | None = None
  dtype: Any = jnp.float32
  remat: bool | str = False
  attention: str = "auto"
  scan_layers: bool = False


def load_or_create(checkpoint: str | None, pretrained: str | None = None, *, arch=None,
                   default_arch: str | CLIPConfig = "ViT-B-32",
                   build: BuildOptions = BuildOptions(), seed: int = 0,
                   init_logit_bias: float | None = None, warn_random: bool = True):
  """The weights `checkpoint` names (any `load_openclip` name; the architecture comes with
  them unless `arch` is given), or random weights (`seed`) of `arch`, else `default_arch`
  (with `init_logit_bias`: a learnable SigLIP bias), logged as meaningless for evaluation
  when `warn_random`; either built with `build`. Returns (model, params, eval_transform,
  name), name saying what the model is, for messages and index records."""
  options = dataclasses.asdict(build)
  if checkpoint:
    model, params, _, transform = create_model_and_transforms(checkpoint, pretrained, arch=arch,
                                                              **options)
    return model, params, transform, checkpoint + (f" pretrained={pretrained}" if pretrained
                                                   else "")
  cfg = get_model_config(arch or default_arch)
  if init_logit_bias is not None:
    cfg = cfg.replace(init_logit_bias=init_logit_bias)
  if warn_random:
    log.warning("no checkpoint: random %s weights, so the results are meaningless",
                arch or default_arch)
  model, params = create_model(cfg, seed=seed, **options)
  return model, params, model_transform(model.cfg), f"random {arch or default_arch}"
