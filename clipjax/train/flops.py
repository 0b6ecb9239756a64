"""Model FLOPs of a training step from the shapes, and the devices' peak FLOP/s, for MFU.

Model FLOPs count the matmuls of the towers (2 per multiply-add: the Dense layers, the
attention scores and values, patch embedding, the projections), per sample, forward. A
trainable tower costs 3x its forward (the backward pass computes the input and the weight
gradients); a frozen one runs forward only; a cached one (data.cache_frozen) not at all.
LayerNorms, activations, softmax, the loss and the optimizer are left out, as in the MFU of
PaLM and big_vision (they are a few % of a tower; `tests/train/test_flops.py` checks the
counts against XLA's cost analysis). Towers without a formula here (ModifiedResNet, HF text
towers) take XLA's count of their forward pass instead.
"""
from __future__ import annotations

import functools
import re
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.models.configs import CLIPConfig, HFTextConfig, TimmViTConfig
from clipjax.train.optim import is_frozen

# Dense bfloat16 peak FLOP/s per chip by `device_kind` (vendor data sheets; GPUs: SXM, no
# sparsity). Matched as case-insensitive substrings, first hit wins.
PEAK_FLOPS = (
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12),  # v5e reports "TPU v5 lite"
    ("TPU v4", 275e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
)


def _blocks(tokens: int, width: int, layers: int, mlp_width: int) -> float:
  """Pre-LN transformer blocks: qkv + out (4 w²), MLP (2 w·m) per token, plus scores and
  values (2 · tokens² · w) per layer."""
  return layers * (2 * tokens * width * (4 * width + 2 * mlp_width) + 4 * tokens ** 2 * width)


def image_flops(cfg: CLIPConfig, patch_dropout: float = 0.0,
                patches: int | None = None) -> float | None:
  """Forward FLOPs of one image (None: no formula for this tower); with `patch_dropout`, the
  blocks and head see the kept patches only (`models.layers.drop_patches`); `patches`: a
  NaFlex image's sequence length (padding included: it is computed, then masked)."""
  v = cfg.vision
  kept = lambda p: max(1, int(p * (1 - patch_dropout)))
  if isinstance(v, TimmViTConfig) and not v.is_siglip:
    return None  # EVA / PE / timm ViTs: XLA's count (`_xla_forward_flops`)
  if isinstance(v, TimmViTConfig):  # no class token; MAP head: kv over the patches, one query
    p = patches or v.grid ** 2
    embed = 2 * p * 3 * v.patch_size ** 2 * v.width
    p = kept(p)
    head = (2 * p * v.width * 2 * v.width + 4 * p * v.width + 2 * v.width * v.width * 2
            + 2 * 2 * v.width * v.mlp_width)
    return float(embed + _blocks(p, v.width, v.layers, v.mlp_width) + head)
  if v.is_resnet:
    return None
  p = v.grid ** 2
  return float(2 * p * 3 * v.patch_size ** 2 * v.width + _blocks(kept(p) + 1, v.width,
                                                                 v.layers, v.mlp_width)
               + 2 * v.width * cfg.embed_dim)


def text_flops(cfg: CLIPConfig, length: int) -> float | None:
  """Forward FLOPs of one text of `length` tokens (None: no formula for this tower)."""
  t = cfg.text
  if isinstance(t, HFTextConfig):
    return None
  projection = 0 if t.proj_type == "none" else 2 * t.width * cfg.embed_dim
  return float(_blocks(length, t.width, t.layers, t.mlp_width) + projection)


@functools.lru_cache(maxsize=32)
def _xla_forward_flops(model, kind: str, length: int) -> float:
  """XLA's count of one sample through a tower without a formula here."""
  size = model.cfg.vision.image_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), images,
                          jax.ShapeDtypeStruct((1, model.cfg.text.context_length), jnp.int32))
  method, x = ((model.encode_image, images) if kind == "image" else (model.encode_text, ids))
  cost = jax.jit(lambda p, x: model.apply(p, x, method=method)).lower(params, x).cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def tower_forward_flops(model, kind: str, length: int = 0) -> float:
  """Forward FLOPs of one image (kind "image"; `length`: a NaFlex image's patches) or one text
  of `length` tokens ("text")."""
  value = (image_flops(model.cfg, getattr(model, "patch_dropout", 0.0), length or None)
           if kind == "image" else text_flops(model.cfg, length))
  return value if value is not None else _xla_forward_flops(model, kind, length)


def trainable_towers(frozen: dict) -> dict[str, bool]:
  """Which towers have a trainable leaf: "image" (clip/visual), "text" (the rest of clip but
  the logit scale / bias) and each extra tower by name, from the optimizer's frozen mask.
  Trained LoRA adapters of a tower (keys "clip.visual...." for the image tower, "dialogue...."
  for that tower) count: the backward pass runs through it."""
  def any_trainable(tree) -> bool:
    return not all(is_frozen(f) for f in jax.tree.leaves(tree))
  clip = frozen["clip"]
  text = {k: v for k, v in clip.items() if k not in ("visual", "logit_scale", "logit_bias")}
  adapters = frozen.get("lora", {})
  adapted = lambda tower: any(any_trainable(v) for k, v in adapters.items() if tower(k))
  out = {"image": any_trainable(clip["visual"]) or adapted(lambda k: k.startswith("clip.visual.")),
         "text": any_trainable(text) or adapted(
             lambda k: k.startswith("clip.") and not k.startswith("clip.visual."))}
  out.update({name: any_trainable(tree) or adapted(lambda k: k.startswith(f"{name}."))
              for name, tree in frozen.items() if name not in ("clip", "lora")})
  return out


def step_flops(model, batch: dict[str, Any], text_towers: dict[str, str],
               trainable: dict[str, bool]) -> float:
  """Model FLOPs of one step on `batch` (the global batch as fed: pixels or cached
  embeddings, token ids after trimming; a two-stream batch as {"text": ..., "image_text":
  ...}). text_towers: token field -> the tower encoding it ("text", or an extra tower such as
  "dialogue"); fields it does not name are not token ids."""
  total = 0.0
  for stream in (batch["text"], batch["image_text"]) if "image_text" in batch else (batch,):
    if "image" in stream:
      passes = 3 if trainable["image"] else 1
      image = stream["image"]  # pixels, or a NaFlex batch dict [N, L, P·P·3]
      rows, patches = (image["pixel_values"].shape[:2] if isinstance(image, Mapping)
                       else (image.shape[0], 0))
      total += passes * rows * tower_forward_flops(model, "image", patches)
    for field, tower in text_towers.items():
      if field not in stream:
        continue
      ids = np.shape(stream[field])
      rows, length = int(np.prod(ids[:-1])), ids[-1]  # negatives: [N, m, L]
      passes = 3 if trainable[tower] else 1
      total += passes * rows * tower_forward_flops(model, "text", length)
  return total


def peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the figure comes from): the table for known TPUs and
  GPUs, else a timed float32 matmul on the device (CPUs, unknown accelerators)."""
  device = device or jax.devices()[0]
  kind = device.device_kind
  for name, flops in PEAK_FLOPS:
    if re.search(re.escape(name), kind, re.IGNORECASE):
      return flops, f"{name} bf16 data sheet"
  return _probe(device), f"{kind}: measured float32 matmul"


@functools.lru_cache(maxsize=8)
def _probe(device: jax.Device, size: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of a jitted square float32 matmul on `device` (best of `repeats`)."""
  a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best
