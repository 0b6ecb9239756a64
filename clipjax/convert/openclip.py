"""OpenCLIP state_dict <-> clipjax params.

Flax paths mirror open_clip keys, so the mapping is a rule, not a table: `/` becomes `.`,
`resblocks_3` becomes `resblocks.3` (likewise ResNet `layer2_0`, `downsample_1`; HF text
towers `layer_3`, `block_0`, `proj_2`), Dense `kernel` is the transposed torch `weight`, Conv
kernels are HWIO vs torch's OIHW, LayerNorm `scale` is `weight`, Embed `embedding` is `weight`,
and the fused attention input projection is torch's `in_proj_weight`/`_bias`. BatchNorm leaves
carry torch's names; its `num_batches_tracked` counter (unused at inference) is dropped on load
and written as 0 on export.
Every load checks the full key set and every shape against the architecture and names what
differs.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.convert.io import (
  CheckpointError,
  save_state_dict,
)
from clipjax.files import atomic_path
from clipjax.models.clip import CLIP
from clipjax.models.configs import (
  CLIPConfig,
  HFTextConfig,
  ImagePreprocess,
  TimmViTConfig,
)
from clipjax.models.naming import flatten, torch_key, unflatten
from clipjax.models.naflex import example_images
from clipjax.models.registry import CLIPJAX_ONLY, MODEL_CONFIGS, get_model_config
from clipjax.models.stacking import stack_layers, unstack_layers

Params = dict[str, Any]
log = logging.getLogger(__name__)


def _to_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":
    return x.T
  if kind == "conv":
    return x.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  return x


def _from_torch_layout(x: np.ndarray, kind: str) -> np.ndarray:
  if kind == "linear":
    return x.T
  if kind == "conv":
    return x.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  return x


_BN_COUNTER = ".num_batches_tracked"


def params_to_state_dict(params: Params) -> dict[str, np.ndarray]:
  """clipjax params (either layer layout) -> open_clip state_dict (numpy float32, torch
  layouts)."""
  sd = {}
  for path, v in flatten(unstack_layers(params)).items():
    key, kind = torch_key(path)
    sd[key] = np.array(_to_torch_layout(np.asarray(v, np.float32), kind), order="C")
    if path[-1] == "running_var":
      sd[key[:-len(".running_var")] + _BN_COUNTER] = np.zeros((), np.int64)
  return sd


def to_layer_layout(params: Params, cfg: CLIPConfig, scan_layers: bool) -> Params:
  """Per-block params (as converted from open_clip) in the layout of `CLIP(cfg, scan_layers)`."""
  return stack_layers(params, param_shapes(cfg, True)) if scan_layers else params


def resize_positional_embedding(pos: np.ndarray, length: int) -> np.ndarray:
  """[L0, W] -> [length, W], linear interpolation with align_corners=False (open_clip's
  `resize_text_pos_embed`), used to load a 77-position checkpoint into a longer context."""
  old = pos.shape[0]
  if old == length:
    return pos
  # float32 coordinate arithmetic, as torch's linear interpolation on float32 tensors
  f32 = np.float32
  scale = f32(old) / f32(length)
  src = np.maximum((np.arange(length, dtype=f32) + f32(0.5)) * scale - f32(0.5), f32(0))
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, old - 1)
  lam = (src - lo.astype(f32))[:, None]
  pos = pos.astype(f32)
  return (f32(1) - lam) * pos[lo] + lam * pos[hi]


def param_shapes(cfg: CLIPConfig, scan_layers: bool = False) -> Params:
  """Abstract params (ShapeDtypeStruct leaves) of `CLIP(cfg)`, without allocating them (a
  fresh tree; the trace runs once per architecture and layout)."""
  return jax.tree.map(lambda x: x, _traced_param_shapes(cfg, scan_layers))


# A run asks for the same shapes 3-5 times (validation, loading, export), and each trace of the
# model's init costs (measured on CPU: 0.6 s for the 2-layer test model, 2.4 s ViT-L-14, 5.8 s
# ViT-bigG-14).
@functools.lru_cache(maxsize=16)
def _traced_param_shapes(cfg: CLIPConfig, scan_layers: bool) -> Params:
  model = CLIP(cfg, scan_layers=scan_layers)
  ids = jax.ShapeDtypeStruct((1, cfg.text.context_length), jnp.int32)
  images = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        example_images(cfg.vision))
  return jax.eval_shape(lambda i, t: model.init(jax.random.key(0), i, t), images, ids)["params"]


def _describe(keys, limit=12) -> str:
  keys = sorted(keys)
  more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def state_dict_to_params(sd: dict[str, np.ndarray], cfg: CLIPConfig,
                         source: str = "checkpoint") -> Params:
  """open_clip state_dict -> clipjax params for `cfg`, checking keys and shapes exactly.

  A text `positional_embedding` shorter or longer than `cfg.text.context_length` is
  interpolated (docs/methods.md §5); every other mismatch is an error naming the tensors.
  """
  shapes = flatten(param_shapes(cfg))
  by_key = {key: (kind, p) for p in shapes for key, kind in [torch_key(p)]}
  sd = {k: v for k, v in sd.items() if not k.endswith(_BN_COUNTER)}
  missing = set(by_key) - set(sd)
  extra = set(sd) - set(by_key)
  if missing or extra:
    msg = [f"{source} does not match architecture (embed_dim={cfg.embed_dim}, vision "
           f"{cfg.vision}, text {cfg.text}):"]
    if _family_of_keys(sd) != _family(cfg):
      msg.append(f"the checkpoint has {_FAMILIES[_family_of_keys(sd)]}, the architecture "
                 f"expects {_FAMILIES[_family(cfg)]}")
    if missing:
      msg.append(f"missing tensors: {_describe(missing)}")
    if extra:
      msg.append(f"unexpected tensors: {_describe(extra)}")
    raise CheckpointError("\n  ".join(msg))
  flat, bad = {}, []
  for key, (kind, path) in by_key.items():
    value = np.asarray(sd[key])
    want = shapes[path].shape
    if (key == cfg.text_prefix + "positional_embedding" and value.ndim == 2
        and value.shape[1] == want[1]):
      value = resize_positional_embedding(value, want[0])
    value = _from_torch_layout(value, kind)
    if value.shape != want:
      bad.append(f"{key}: expected {tuple(_to_torch_layout(np.empty(want), kind).shape)}, got "
                 f"{tuple(np.asarray(sd[key]).shape)}")
      continue
    flat[path] = jnp.asarray(value, jnp.float32)
  if bad:
    raise CheckpointError(f"{source} has tensors of the wrong shape for this architecture:\n  "
                          + "\n  ".join(bad))
  return unflatten(flat)


def _text_prefix(sd: dict[str, np.ndarray]) -> str:
  """"text." for a CustomTextCLIP state dict (SigLIP, HF text towers), else ""."""
  return "text." if any(k.startswith("text.") for k in sd) else ""


_FAMILIES = {"timm": "a timm image tower (SigLIP, EVA, PE: visual.trunk.*)",
             "resnet": "a ModifiedResNet image tower (visual.attnpool.*)",
             "vit": "a CLIP ViT image tower (visual.transformer.*)"}


def _family_of_keys(keys) -> str:
  keys = set(keys)
  if any(k.startswith("visual.trunk.") for k in keys):
    return "timm"
  return "resnet" if "visual.attnpool.positional_embedding" in keys else "vit"


def _family(cfg: CLIPConfig) -> str:
  return "timm" if isinstance(cfg.vision, TimmViTConfig) else (
      "resnet" if cfg.vision.is_resnet else "vit")


def _candidate_prefilter(cfg: CLIPConfig, sd: dict[str, np.ndarray]) -> bool:
  """Cheap necessary conditions (a few tensor shapes) before the full shape comparison."""
  if isinstance(cfg.text, HFTextConfig):
    return False  # HF text towers are loaded with their JSON (arch=path.json)
  prefix = _text_prefix(sd)
  if prefix != cfg.text_prefix:
    return False
  try:
    if _family_of_keys(sd) != _family(cfg):
      return False
    if sd[prefix + "token_embedding.weight"].shape != (cfg.text.vocab_size, cfg.text.width):
      return False
  except KeyError:
    return False
  proj = sd.get(prefix + "text_projection", sd.get(prefix + "text_projection.weight"))
  out_dim = cfg.text.width if proj is None else (
      proj.shape[1] if prefix + "text_projection" in sd else proj.shape[0])
  return out_dim == cfg.embed_dim and all(np.shape(sd.get(key)) == shape
                                          for key, shape in _vision_signature(cfg).items())


def _vision_signature(cfg: CLIPConfig) -> dict[str, tuple[int, ...]]:
  """A native image tower's stem shapes, read from the config without tracing the model (the
  ViT's patch conv and position table, the ResNet's first conv); none for timm trunks."""
  v = cfg.vision
  if isinstance(v, TimmViTConfig):
    return {}
  if v.is_resnet:
    return {"visual.conv1.weight": (v.width // 2, 3, 3, 3)}
  return {"visual.conv1.weight": (v.width, 3, v.patch_size, v.patch_size),
          "visual.positional_embedding": (v.grid ** 2 + 1, v.width)}


@functools.lru_cache(maxsize=64)
def _torch_shapes(cfg: CLIPConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
  """{open_clip key: (layout kind, Flax shape)} of an architecture (one trace per config)."""
  return {torch_key(p)[0]: (torch_key(p)[1], v.shape) for p, v in flatten(param_shapes(cfg)).items()
          if p != ("logit_bias",)}  # a bias or not is read from the checkpoint, not the name


def _shapes_match(cfg: CLIPConfig, sd: dict[str, np.ndarray]) -> bool:
  pos = sd[cfg.text_prefix + "positional_embedding"]
  # the activation changes no shape: a -quickgelu twin reuses its base's trace
  want = _torch_shapes(cfg.replace(text={"context_length": pos.shape[0]}, quick_gelu=False))
  keys = {k for k in sd if not k.endswith(_BN_COUNTER) and k != "logit_bias"}
  if keys != set(want):
    return False
  return all(_to_torch_layout(np.empty(shape), kind).shape == tuple(np.shape(sd[k]))
             for k, (kind, shape) in want.items())


def infer_config(sd: dict[str, np.ndarray]) -> CLIPConfig:
  """The registered architecture whose every tensor shape equals the checkpoint's (test and
  demo configs included). Architectures that differ only in the activation cannot be told
  apart by shapes: plain GELU is chosen over `-quickgelu`, with a warning. Raises
  CheckpointError listing the candidates when the shapes match none, or several that differ
  in more than the activation (e.g. head counts)."""
  prefix = _text_prefix(sd)
  if prefix + "token_embedding.weight" not in sd or prefix + "positional_embedding" not in sd:
    raise CheckpointError("cannot infer the architecture: not an open_clip CLIP or SigLIP state "
                          "dict (no token_embedding / positional_embedding); pass arch= "
                          "explicitly")
  bias = float(np.asarray(sd["logit_bias"])) if "logit_bias" in sd else None
  near = [n for n, c in MODEL_CONFIGS.items() if _candidate_prefilter(c, sd)]
  matches = [n for n in near if _shapes_match(MODEL_CONFIGS[n], sd)]
  plain = [n for n in matches if not MODEL_CONFIGS[n].quick_gelu]
  if len(plain) == 1 or (not plain and len(matches) == 1):
    name = (plain or matches)[0]
    if f"{name}-quickgelu" in matches:
      log.warning("inferred architecture %s from tensor shapes; pass arch='%s-quickgelu' for "
                  "weights trained with QuickGELU (OpenAI, MetaCLIP, DFN)", name, name)
    ctx = sd[prefix + "positional_embedding"].shape[0]
    return MODEL_CONFIGS[name].replace(text={"context_length": ctx}, init_logit_bias=bias)
  if len(plain) > 1:
    raise CheckpointError(f"the tensor shapes fit several architectures ({', '.join(plain)}); "
                          f"pass arch= (--arch) to choose")
  raise CheckpointError(
      "the tensor shapes match no registered architecture"
      + (f" (same text tower as {', '.join(near)})" if near else "")
      + "; pass arch= (--arch) with a name from clipjax.list_models() or an open_clip model "
        "JSON file")


def config_for_params(arch: str | CLIPConfig, params: Params) -> CLIPConfig:
  """The registry config of `arch`, with the text context length taken from the params (either
  layer layout)."""
  cfg = get_model_config(arch)
  params = unstack_layers(params)
  text = params.get("text", {}) if cfg.text_prefix else params
  ctx = text["positional_embedding"].shape[0] if "positional_embedding" in text else \
      cfg.text.context_length  # HF text towers have no CLIP positional table
  if ctx != cfg.text.context_length:
    cfg = cfg.replace(text={"context_length": ctx})
  if ("logit_bias" in params) != (cfg.init_logit_bias is not None):
    cfg = cfg.replace(init_logit_bias=float(params["logit_bias"]) if "logit_bias" in params
                      else None)
  want, got = flatten(param_shapes(cfg)), flatten(params)
  bad = [f"{'/'.join(p)}: expected {want[p].shape}, got {np.shape(got.get(p))}"
         for p in want if p not in got or np.shape(got[p]) != want[p].shape]
  bad += [f"{'/'.join(p)}: not a parameter of {arch}" for p in got if p not in want]
  if bad:
    raise CheckpointError(f"params do not match architecture {arch}:\n  " + "\n  ".join(bad[:12]))
  return cfg


def export_openclip(params: Params, arch: str | CLIPConfig, path: str | os.PathLike) -> Path:
  """Writes params as an open_clip state_dict (`.safetensors` or `.pt`), atomically.

  When the model is not a stock open_clip architecture (a different context length, a
  clipjax-only config), also writes `<path stem>.json`, the open_clip model config: register
  it with `open_clip.add_model_config(json_path)` and create the model by the file's stem.
  Returns the path of that JSON, or of the weights when none was needed.
  """
  path = Path(path)
  cfg = config_for_params(arch, params)
  save_state_dict(params_to_state_dict(params), path)
  if any(cfg.architecture() == c for name, c in MODEL_CONFIGS.items() if name not in CLIPJAX_ONLY):
    return path  # a stock open_clip architecture: `create_model(name, pretrained=path)` loads it
  json_path = path.with_suffix(".json")
  with atomic_path(json_path) as tmp:
    Path(tmp).write_text(json.dumps(cfg.to_openclip_json(), indent=2))
  return json_path


def pytorch_load_line(weights: str | os.PathLike, arch: str | CLIPConfig) -> str:
  """A Python line that loads exported weights in open_clip, verbatim: by the stock
  architecture name, or first registering the JSON `export_openclip` wrote next to them."""
  weights = Path(weights).resolve()
  cfg = get_model_config(arch)
  stock = [n for n, c in MODEL_CONFIGS.items() if c == cfg.architecture() and n not in CLIPJAX_ONLY]
  json_path = weights.with_suffix(".json")
  # open_clip takes the preprocessing of a file path from its defaults (OpenAI's): name others
  pre, default = cfg.image_preprocess, ImagePreprocess()
  extra = "".join(f", image_{k}={v!r}" for k, v in pre.transform_kwargs().items()
                  if v != getattr(default, k))
  load = f"pretrained={str(weights)!r}{extra})"
  if stock and not json_path.exists():
    return (f"import open_clip; model, _, preprocess = open_clip.create_model_and_transforms("
            f"{stock[0]!r}, {load}")
  return (f"import open_clip; open_clip.add_model_config({str(json_path)!r}); "
          f"model, _, preprocess = open_clip.create_model_and_transforms({json_path.stem!r}, "
          f"{load}")
