"""LoRA (Hu et al., 2021): a low-rank update W + (alpha / rank) · A B of chosen kernels, the
base weights frozen and only A, B trained.

Adapters are a pytree of their own, `{dotted kernel path: {"a": [..., S, in, r], "b": [..., S,
r, out / S]}}`: a fused q/k/v kernel ([in, 3W]: `attn/in_proj`, timm's `attn/qkv`) gets one
adapter per slice (S = 3), so they map one to one onto separate q / k / v projections; a
scanned stack's kernel ([L, in, out]) gets stacked adapters. B starts at zero (the adapted
model starts as the base) and A uniform in ±1/sqrt(in) (PEFT's Kaiming-uniform init of A).

Only `nn.Dense` kernels are adapted (every attention and MLP projection of our towers is one).
Training applies the adapters beside the frozen kernels, as PEFT does: within
`applying_lora(scale, dropout)`, every Dense whose scope holds a `lora` variable {"a", "b"}
(`lora_variables` lays the adapters out so) returns x W + b + scale · (dropout(x) A) B, so the
backward never forms a full weight gradient and `lora.dropout` drops input features per token.
Scanned stacks slice the `lora` collection per layer like their params. Evaluation and export
use `merge_lora` (W + scale · A B: the same function when nothing is dropped).
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.naming import unflatten
from clipjax.models.stacking import stacked_segment

# Attention (fused or separate q/k/v, output) and MLP (SwiGLU's two inputs too) kernels of the
# CLIP ViT / text towers and the timm trunks.
# (not the MLP of a relative-position bias, `attn/rel_pos/mlp`: a 2-input table generator)
DEFAULT_TARGETS = (r"/(attn/(in_proj|out_proj|qkv|[qkv]_proj|proj)"
                   r"|(?<!rel_pos/)mlp/(c_fc|c_proj|fc1|fc1_g|fc1_x|fc2))/kernel$",)
_FUSED = re.compile(r"/(in_proj|qkv)/kernel$")


def _path(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _dense_kernel(keys: tuple[str, ...], leaf) -> bool:
  """A Dense kernel: named `kernel`, [in, out] (with a leading layer axis when stacked)."""
  return keys[-1] == "kernel" and leaf.ndim == 2 + (stacked_segment(keys) is not None)


def lora_targets(params: Any, targets: Sequence[str] = DEFAULT_TARGETS,
                 exclude: Sequence[str] = ()) -> list[str]:
  """The "/"-joined paths of the Dense kernels matching a `targets` regex and no `exclude`
  regex (re.search)."""
  take = [re.compile(t) for t in targets]
  skip = [re.compile(e) for e in exclude]
  out = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    p = "/".join(keys)
    if (_dense_kernel(keys, leaf) and any(t.search(p) for t in take)
        and not any(s.search(p) for s in skip)):
      out.append(p)
  return out


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


def lora_variables(adapters: dict, tower: str) -> dict:
  """The `lora` variable collection of tower `tower` (a key of the params, e.g. "clip"): each
  adapter {"a", "b"} in the scope of the Dense whose kernel it adapts."""
  prefix = f"{tower}."
  return unflatten({tuple(k[len(prefix):].split(".")[:-1]) + (leaf,): v[leaf]
                    for k, v in adapters.items() if k.startswith(prefix) for leaf in ("a", "b")})


def _lora_dense(scale: float, dropout: float):
  def interceptor(next_fun, args, kwargs, context):
    module, out = context.module, next_fun(*args, **kwargs)
    if (context.method_name != "__call__" or not isinstance(module, nn.Dense)
        or not module.has_variable("lora", "a")):
      return out
    x = args[0]
    a = module.get_variable("lora", "a").astype(x.dtype)  # [S, in, r]
    b = module.get_variable("lora", "b").astype(x.dtype)  # [S, r, out / S]
    if dropout and module.has_rng("lora_dropout"):  # training only: evaluation passes no rng
      keep = jax.random.bernoulli(module.make_rng("lora_dropout"), 1.0 - dropout, x.shape)
      x = jnp.where(keep, x / (1.0 - dropout), 0).astype(x.dtype)
    delta = jnp.einsum("...sr,sro->...so", jnp.einsum("...i,sir->...sr", x, a), b)
    return out + (scale * delta.reshape(*delta.shape[:-2], -1)).astype(out.dtype)
  return interceptor


@contextlib.contextmanager
def applying_lora(scale: float, dropout: float = 0.0) -> Iterator[None]:
  """Within it, a Dense with `lora` variables adds its adapter's update (module doc); give
  `model.apply` a "lora_dropout" rng to drop (dropout > 0)."""
  with nn.intercept_methods(_lora_dense(scale, dropout)):
    yield
