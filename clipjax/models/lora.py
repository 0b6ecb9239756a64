"""LoRA (Hu et al., 2021): a low-rank update W + (alpha / rank) · A B of chosen kernels, the
base weights frozen and only A, B trained.

Adapters are a pytree of their own, `{dotted kernel path: {"a": [..., S, in, r], "b": [..., S,
r, out / S]}}`: a fused q/k/v kernel ([in, 3W]: `attn/in_proj`, timm's `attn/qkv`) gets one
adapter per slice (S = 3), so they map one to one onto separate q / k / v projections; a
scanned stack's kernel ([L, in, out]) gets stacked adapters. B starts at zero (the adapted
model starts as the base) and A uniform in ±1/sqrt(in) (PEFT's Kaiming-uniform init of A).
Training merges them into the weights inside the step (`merge_lora`): one r-rank product per
kernel, so every tower, method, layout and sharding runs unchanged.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp

# Attention (fused q/k/v and output) and MLP kernels of the CLIP ViT / text and SigLIP towers.
DEFAULT_TARGETS = (r"/(attn/(in_proj|out_proj|qkv|proj)|mlp/(c_fc|c_proj|fc1|fc2))/kernel$",)
_FUSED = re.compile(r"/(in_proj|qkv)/kernel$")


def _path(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def lora_targets(params: Any, targets: Sequence[str] = DEFAULT_TARGETS,
                 exclude: Sequence[str] = ()) -> list[str]:
  """The "/"-joined paths of the ≥ 2-D leaves matching a `targets` regex and no `exclude`
  regex (re.search)."""
  take = [re.compile(t) for t in targets]
  skip = [re.compile(e) for e in exclude]
  return [p for p, leaf in ((_path(k), v) for k, v in jax.tree_util.tree_leaves_with_path(params))
          if leaf.ndim >= 2 and any(t.search(p) for t in take) and not any(s.search(p) for s in skip)]


def init_lora(params: Any, rank: int, targets: Sequence[str] = DEFAULT_TARGETS,
              exclude: Sequence[str] = (), seed: int = 0) -> dict:
  """Adapters of rank `rank` for every targeted kernel of `params` (see the module doc)."""
  leaves = {_path(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
  chosen = lora_targets(params, targets, exclude)
  if not chosen:
    raise ValueError(f"lora.targets {list(targets)} match no kernel")
  out = {}
  for i, path in enumerate(chosen):
    shape = leaves[path].shape
    *lead, n_in, n_out = shape
    slices = 3 if _FUSED.search(path) else 1
    bound = n_in ** -0.5
    a = jax.random.uniform(jax.random.fold_in(jax.random.key(seed), i),
                           (*lead, slices, n_in, rank), jnp.float32, -bound, bound)
    out[path.replace("/", ".")] = {"a": a, "b": jnp.zeros((*lead, slices, rank, n_out // slices),
                                                         jnp.float32)}
  return out


def lora_delta(adapter: dict, scale: float) -> jax.Array:
  """scale · A B of one adapter, laid out as its kernel ([..., in, out])."""
  a, b = adapter["a"], adapter["b"]
  delta = jnp.einsum("...sir,...sro->...iso", a, b, precision=jax.lax.Precision.HIGHEST)
  return scale * delta.reshape(*delta.shape[:-2], -1)


def merge_lora(params: Any, adapters: dict, scale: float) -> Any:
  """`params` with every adapted kernel replaced by W + scale · A B (the others as they are).
  `scale` = lora.alpha / lora.rank."""
  def merged(path, leaf):
    adapter = adapters.get(_path(path).replace("/", "."))
    return leaf if adapter is None else (leaf + lora_delta(adapter, scale)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(merged, params)
