"""Parameter sharding by regex rules (FSDP over the mesh's `fsdp` axis).

A leaf whose "/"-joined path matches one of `rules` and has at least `min_size` elements is
split over `fsdp` on its largest dimension that the axis divides (never the layer axis of a
scanned stack, which the scan walks through one block at a time); everything else (small
leaves, LayerNorms, the logit scale) is replicated. Optimizer state follows its parameters.
With `mesh.fsdp=1` every leaf is replicated: plain data parallelism.

How a leaf is named is the model's business: `names` gives the names the rules read and the
first axis that may be split (`clipjax.models.stacking.rule_names` for CLIP parameters, which
reads a scanned stack in per-block names and keeps its layer axis whole); by default a leaf is
its "/"-joined path and every axis may be split.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clipjax.parallel.mesh import FSDP

# (jax key path, leaf) -> (the names rules are matched against, the first splittable axis)
LeafNames = Callable[[tuple, Any], tuple[Sequence[str], int]]


def path_names(path: tuple, leaf: Any) -> tuple[Sequence[str], int]:
  """The default `LeafNames`: the "/"-joined path; every axis may be split."""
  del leaf
  return ("/".join(str(getattr(k, "key", k)) for k in path),), 0


def param_shardings(params: Any, mesh: Mesh, rules: Sequence[str] = (".*",),
                    min_size: int = 2**14, names: LeafNames = path_names) -> Any:
  """A NamedSharding per leaf of `params` (arrays or ShapeDtypeStructs)."""
  n = mesh.shape[FSDP]
  compiled = [re.compile(r) for r in rules]

  def sharding(path, leaf):
    matched, first = names(path, leaf)
    spec = [None] * leaf.ndim
    if n > 1 and leaf.size >= min_size and any(c.search(m) for c in compiled for m in matched):
      dims = [d for d in sorted(range(first, leaf.ndim), key=lambda d: -leaf.shape[d])
              if leaf.shape[d] % n == 0]
      if dims:
        spec[dims[0]] = FSDP
    return NamedSharding(mesh, P(*spec))

  return jax.tree_util.tree_map_with_path(sharding, params)


def state_shardings(state: Any, tx: optax.GradientTransformation, mesh: Mesh,
                    params_sharding: Any) -> Any:
  """Shardings of the train state {params, opt_state, step, rng[, ema]}: optimizer moments and
  averaged weights of their parameter's shape as that parameter, others (adafactor's factored
  row / column statistics, an average's scalar placeholder) and everything else replicated."""
  replicated = NamedSharding(mesh, P())
  masked = lambda x: isinstance(x, optax.MaskedNode)  # e.g. weight decay's excluded leaves
  like_param = lambda x, s, p: x if masked(x) else s if x.shape == p.shape else replicated
  opt = optax.tree_map_params(tx, like_param, state["opt_state"], params_sharding,
                              state["params"], transform_non_params=lambda _: replicated,
                              is_leaf=masked)
  out = {k: replicated for k in state} | {"params": params_sharding, "opt_state": opt}
  if "ema" in state:
    out["ema"] = jax.tree.map(lambda e, p, s: s if e.shape == p.shape else replicated,
                              state["ema"], state["params"], params_sharding)
  return out
