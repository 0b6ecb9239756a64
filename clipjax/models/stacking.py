"""The two layouts of a tower's blocks: per block, as open_clip names them
(`visual/transformer/resblocks_3/ln_1/scale`), and scanned (`model.scan_layers`), one stack
whose leaves carry a leading layer axis (`visual/transformer/resblocks/ln_1/scale`, [L, W]).

A stacked segment is one of `STACKED_NAMES` written without an index. Its layers continue the
numbering of any unrolled siblings (a scanned T5 tower keeps `block_0`, which holds the
position-bias table, and stacks blocks 1 .. L-1 as `block`). Conversion, export, freezing,
weight decay and sharding read the per-block names, so a rule written for one layout holds
for the other.
"""
from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from clipjax.models.naming import flatten, path_keys, unflatten

# open_clip / timm / HF block lists: the ViT and text `resblocks`, timm `blocks`, RoBERTa
# `layer`, T5 `block`, M2M100 `layers`.
STACKED_NAMES = ("resblocks", "blocks", "layer", "block", "layers")


def stacked_segment(keys: tuple[str, ...]) -> int | None:
  """Index of the stacked segment in a path's keys, or None for an unstacked leaf."""
  return next((j for j, k in enumerate(keys) if k in STACKED_NAMES), None)


def _first_layer(keys: tuple[str, ...], j: int, paths) -> int:
  """How many unrolled siblings `{name}_{i}` precede the stack at keys[j]."""
  pattern = re.compile(rf"{re.escape(keys[j])}_(\d+)")
  return len({p[j] for p in paths if p[:j] == keys[:j] and len(p) > j and pattern.fullmatch(p[j])})


def layer_keys(keys: tuple[str, ...], count: int, paths) -> list[tuple[str, ...]]:
  """The per-block paths of a leaf: itself when unstacked, else one per layer of its stack
  (`count` = its leading dimension; `paths`: every leaf path of the tree, for the offset)."""
  j = stacked_segment(keys)
  if j is None:
    return [keys]
  first = _first_layer(keys, j, paths)
  return [keys[:j] + (f"{keys[j]}_{first + m}",) + keys[j + 1:] for m in range(count)]


def is_stacked(params: Any) -> bool:
  """Whether any leaf of `params` is in the scanned layout."""
  return any(stacked_segment(k) is not None for k in flatten(params))


def unstack_layers(params: Any) -> Any:
  """Scanned layout -> per-block layout (a per-block tree comes back unchanged)."""
  flat = flatten(params)
  out = {}
  for keys, value in flat.items():
    j = stacked_segment(keys)
    if j is None:
      out[keys] = value
      continue
    for m, layer in enumerate(layer_keys(keys, value.shape[0], flat)):
      out[layer] = value[m]
  return unflatten(out)


def stack_layers(params: Any, like: Any) -> Any:
  """Per-block `params` -> the layout of `like` (a tree of arrays or ShapeDtypeStructs, e.g.
  `jax.eval_shape` of a scanned model's init). Raises KeyError naming a missing block."""
  flat, target = flatten(params), flatten(like)
  used, out = set(), {}
  for keys, leaf in target.items():
    layers = layer_keys(keys, leaf.shape[0], target) if stacked_segment(keys) is not None \
        else [keys]
    missing = [k for k in layers if k not in flat]
    if missing:
      raise KeyError(f"no parameter {'/'.join(missing[0])} to build {'/'.join(keys)}")
    values = [flat[k] for k in layers]
    used.update(layers)
    if stacked_segment(keys) is None:
      out[keys] = values[0]
    else:
      out[keys] = (np.stack(values) if all(isinstance(v, np.ndarray) for v in values)
                   else jnp.stack(values))
  extra = sorted(set(flat) - used)
  if extra:
    raise KeyError(f"parameter {'/'.join(extra[0])} has no place in the target layout")
  return unflatten(out)


def block_names(path: tuple, leaf: Any, paths) -> list[str]:
  """The "/"-joined per-block names of the leaf at jax key path `path` (one per layer when it
  is stacked): what freezing regexes and weight decay read. `paths`: the tree's leaf paths as
  `naming.flatten` keys."""
  keys = path_keys(path)
  count = leaf.shape[0] if stacked_segment(keys) is not None else 1
  return ["/".join(k) for k in layer_keys(keys, count, paths)]


def rule_names(params: Any):
  """The `clipjax.parallel.sharding.LeafNames` of `params`: a leaf is matched by its path and
  by its first per-block name (rules read either layout), and a stacked leaf's layer axis 0
  is never split (the scan walks it one block at a time)."""
  paths = list(flatten(params))

  def names(path: tuple, leaf: Any) -> tuple[tuple[str, str], int]:
    keys = path_keys(path)
    return ("/".join(keys), block_names(path, leaf, paths)[0]), int(
        stacked_segment(keys) is not None)

  return names
