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

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.convert.io import CheckpointError, atomic_path, load_state_dict, save_state_dict
from clipjax.models.registry import (CLIPJAX_ONLY, MODEL_CONFIGS, CLIPConfig, HFTextConfig,
                                     TextConfig, VisionConfig, get_model_config)

Params = dict[str, Any]
log = logging.getLogger(__name__)


def torch_key(path: tuple[str, ...]) -> tuple[str, str]:
  """Flax param path -> (open_clip key, kind), kind in {'linear', 'conv', 'plain'}."""
  *mods, leaf = path
  names = [re.sub(r"^(resblocks|layer\d?|downsample|block|proj)_(\d+)$", r"\1.\2", m)
           for m in mods]
  if mods and mods[-1] == "in_proj":
    return ".".join(names[:-1] + [f"in_proj_{'weight' if leaf == 'kernel' else 'bias'}"]), \
        "linear" if leaf == "kernel" else "plain"
  if leaf == "kernel":
    conv = re.fullmatch(r"conv\d|downsample_0", mods[-1])
    return ".".join(names + ["weight"]), "conv" if conv else "linear"
  if leaf in ("scale", "embedding"):
    return ".".join(names + ["weight"]), "plain"
  return ".".join(names + [leaf]), "plain"


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


def _flat(tree: Params) -> dict[tuple[str, ...], Any]:
  return {tuple(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def _unflat(flat: dict[tuple[str, ...], Any]) -> Params:
  out: Params = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


_BN_COUNTER = ".num_batches_tracked"


def params_to_state_dict(params: Params) -> dict[str, np.ndarray]:
  """clipjax params -> open_clip state_dict (numpy float32, torch layouts)."""
  sd = {}
  for path, v in _flat(params).items():
    key, kind = torch_key(path)
    sd[key] = np.array(_to_torch_layout(np.asarray(v, np.float32), kind), order="C")
    if path[-1] == "running_var":
      sd[key[:-len(".running_var")] + _BN_COUNTER] = np.zeros((), np.int64)
  return sd


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


def param_shapes(cfg: CLIPConfig) -> Params:
  """Abstract params (ShapeDtypeStruct leaves) of `CLIP(cfg)`, without allocating them."""
  from clipjax.models.clip import CLIP
  model = CLIP(cfg)
  images = jax.ShapeDtypeStruct((1, cfg.vision.image_size, cfg.vision.image_size, 3), jnp.float32)
  ids = jax.ShapeDtypeStruct((1, cfg.text.context_length), jnp.int32)
  return jax.eval_shape(model.init, jax.random.key(0), images, ids)["params"]


def _describe(keys, limit=12) -> str:
  keys = sorted(keys)
  more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def state_dict_to_params(sd: dict[str, np.ndarray], cfg: CLIPConfig,
                         source: str = "checkpoint") -> Params:
  """open_clip state_dict -> clipjax params for `cfg`, checking keys and shapes exactly.

  A text `positional_embedding` shorter or longer than `cfg.text.context_length` is
  interpolated (METHODS §5); every other mismatch is an error naming the tensors.
  """
  shapes = _flat(param_shapes(cfg))
  by_key = {key: (kind, p) for p in shapes for key, kind in [torch_key(p)]}
  sd = {k: v for k, v in sd.items() if not k.endswith(_BN_COUNTER)}
  missing = set(by_key) - set(sd)
  extra = set(sd) - set(by_key)
  if missing or extra:
    msg = [f"{source} does not match architecture (embed_dim={cfg.embed_dim}, vision "
           f"{cfg.vision}, text {cfg.text}):"]
    if missing:
      msg.append(f"missing tensors: {_describe(missing)}")
    if extra:
      msg.append(f"unexpected tensors: {_describe(extra)}")
    raise CheckpointError("\n  ".join(msg))
  flat, bad = {}, []
  for key, (kind, path) in by_key.items():
    value = np.asarray(sd[key])
    want = shapes[path].shape
    if key == "positional_embedding" and value.ndim == 2 and value.shape[1] == want[1]:
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
  return _unflat(flat)


def infer_config(sd: dict[str, np.ndarray]) -> CLIPConfig:
  """Architecture from tensor shapes; head counts and the activation come from the registry
  entry with the same shapes (plain GELU is chosen over `-quickgelu`, which shapes cannot tell)."""
  try:
    conv = sd["visual.conv1.weight"].shape
    if "visual.attnpool.positional_embedding" in sd:  # ModifiedResNet: 32x downsampling
      grid = int(round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5))
      vis = VisionConfig(image_size=grid * 32, patch_size=None, width=conv[0] * 2,
                         layers=tuple(_count_blocks(sd, f"visual.layer{i}.") for i in range(1, 5)))
      embed_dim = sd["visual.attnpool.c_proj.weight"].shape[0]
    else:
      vis = VisionConfig(
          image_size=int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)) * conv[2],
          patch_size=conv[2], width=conv[0],
          layers=_count_blocks(sd, "visual.transformer.resblocks."),
          mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / conv[0])
      embed_dim = sd["visual.proj"].shape[1]
    tok = sd["token_embedding.weight"].shape
    txt = TextConfig(context_length=sd["positional_embedding"].shape[0], vocab_size=tok[0],
                     width=tok[1], heads=max(tok[1] // 64, 1),
                     layers=_count_blocks(sd, "transformer.resblocks."),
                     mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / tok[1])
  except KeyError as e:
    raise CheckpointError(f"cannot infer the architecture: tensor {e} is missing (is this an "
                          f"open_clip ViT or ResNet checkpoint? pass arch= explicitly)") from None
  bias = float(np.asarray(sd["logit_bias"])) if "logit_bias" in sd else None
  for name, cfg in MODEL_CONFIGS.items():
    if cfg.quick_gelu or name in CLIPJAX_ONLY:
      continue
    v, t = cfg.vision, cfg.text
    if isinstance(t, HFTextConfig):
      continue
    same_vision = (cfg.embed_dim, v.image_size, v.patch_size, v.width, v.layers, v.mlp_width) == (
        embed_dim, vis.image_size, vis.patch_size, vis.width, vis.layers,
        int(round(vis.mlp_ratio * vis.width)))
    same_text = (t.vocab_size, t.width, t.layers, t.mlp_width) == (
        txt.vocab_size, txt.width, txt.layers, int(round(txt.mlp_ratio * txt.width)))
    if same_vision and same_text:
      log.info("inferred architecture %s (pass arch='%s-quickgelu' for OpenAI-trained weights)",
               name, name)
      return cfg.replace(text={"context_length": txt.context_length}, init_logit_bias=bias)
  log.warning("checkpoint matches no registered architecture; assuming 64-wide heads and GELU")
  return CLIPConfig(embed_dim, vis, txt, init_logit_bias=bias)


def _count_blocks(sd, prefix: str) -> int:
  return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def config_for_params(arch: str | CLIPConfig, params: Params) -> CLIPConfig:
  """The registry config of `arch`, with the text context length taken from the params."""
  cfg = get_model_config(arch)
  ctx = params["positional_embedding"].shape[0] if "positional_embedding" in params else \
      cfg.text.context_length  # HF text towers have no CLIP positional table
  if ctx != cfg.text.context_length:
    cfg = cfg.replace(text={"context_length": ctx})
  if ("logit_bias" in params) != (cfg.init_logit_bias is not None):
    cfg = cfg.replace(init_logit_bias=float(params["logit_bias"]) if "logit_bias" in params
                      else None)
  want, got = _flat(param_shapes(cfg)), _flat(params)
  bad = [f"{'/'.join(p)}: expected {want[p].shape}, got {np.shape(got.get(p))}"
         for p in want if p not in got or np.shape(got[p]) != want[p].shape]
  bad += [f"{'/'.join(p)}: not a parameter of {arch}" for p in got if p not in want]
  if bad:
    raise CheckpointError(f"params do not match architecture {arch}:\n  " + "\n  ".join(bad[:12]))
  return cfg


def load_openclip(path: str | os.PathLike, arch: str | CLIPConfig | None = None, *,
                  context_length: int | None = None, dtype=jnp.float32, remat: bool = False):
  """Loads an OpenCLIP checkpoint. Returns (model, params); params are float32.

  arch: open_clip architecture name (or CLIPConfig); None infers it from the tensor shapes.
  context_length: build a text tower with this context, interpolating positional embeddings.
  """
  from clipjax.models.clip import CLIP
  sd = load_state_dict(path)
  if arch is None:
    cfg = infer_config(sd)
  else:
    cfg = get_model_config(arch)
    if "logit_bias" in sd:
      cfg = cfg.replace(init_logit_bias=float(np.asarray(sd["logit_bias"])))
  if context_length:
    cfg = cfg.replace(text={"context_length": context_length})
  params = state_dict_to_params(sd, cfg, source=str(path))
  return CLIP(cfg, dtype=dtype, remat=remat), params


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
  if any(cfg == c for name, c in MODEL_CONFIGS.items() if name not in CLIPJAX_ONLY):
    return path  # a stock open_clip architecture: `create_model(name, pretrained=path)` loads it
  json_path = path.with_suffix(".json")
  with atomic_path(json_path) as tmp:
    Path(tmp).write_text(json.dumps(cfg.to_openclip_json(), indent=2))
  return json_path
