"""Optimizer: AdamW (or another optax optimizer by name) with open_clip's warmup + cosine
schedule, open_clip's weight-decay exclusions, gradient clipping, and freezing by regex on
parameter paths.

Parameter paths are "/"-joined Flax paths (`visual/transformer/resblocks_0/ln_1/scale`); a
dialogue tower nests under its own prefix. Weight decay follows open_clip's trainer exactly by
deciding on the open_clip *name* of each parameter: no decay when ndim < 2 or the name
contains `bn`, `ln`, `bias` or `logit_scale` (embeddings are decayed).
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipjax.models.naming import flatten, path_keys, torch_key
from clipjax.models.stacking import block_names, stacked_segment
from clipjax.options import OptimOptions


def frozen_mask(params: Any, patterns: Sequence[str]) -> Any:
  """True for leaves whose path matches any regex (re.search). Every pattern must match
  something, so a typo cannot silently train a tower that was meant to be frozen.

  Patterns read per-block names in both layouts (`resblocks_3`, models/stacking.py): a stacked
  leaf whose layers match only in part gets a bool [L] array, True for its frozen layers."""
  compiled = [re.compile(p) for p in patterns]
  paths = list(flatten(params))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [block_names(path, leaf, paths) for path, leaf in leaves]
  for pattern in compiled:
    if not any(pattern.search(n) for layers in names for n in layers):
      raise ValueError(f"freeze pattern {pattern.pattern!r} matches no parameter; paths look "
                       f"like {[layers[0] for layers in names[:3]]}")

  def mask(layers: list[str]):
    hits = np.array([any(c.search(n) for c in compiled) for n in layers])
    return bool(hits.all()) if hits.all() or not hits.any() else hits
  return treedef.unflatten([mask(layers) for layers in names])


def is_frozen(f: bool | np.ndarray) -> bool:
  """Whether a `frozen_mask` leaf freezes the whole leaf (every layer of a stack)."""
  return bool(np.all(f))


def decay_mask(params: Any) -> Any:
  """open_clip's rule on open_clip names: decay iff ndim >= 2 and no bn/ln/bias/logit_scale
  (per block: a stacked leaf's layer axis does not count)."""
  paths = list(flatten(params))

  def decays(path, leaf):
    block = block_names(path, leaf, paths)[0]
    ndim = leaf.ndim - (stacked_segment(path_keys(path)) is not None)
    name = torch_key(tuple(block.split("/")))[0]
    return ndim >= 2 and not any(s in name for s in ("bn", "ln", "bias", "logit_scale"))
  return jax.tree_util.tree_map_with_path(decays, params)


def cosine_schedule(base_lr: float, warmup_steps: int, total_steps: int):
  """open_clip's cosine_lr: lr·(step+1)/warmup during warmup, then a half cosine to 0."""
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = base_lr * (step + 1) / max(warmup_steps, 1)
    e = step - warmup_steps
    es = max(total_steps - warmup_steps, 1)
    cos = 0.5 * (1 + jnp.cos(math.pi * e / es)) * base_lr
    return jnp.where(step < warmup_steps, warm, cos)
  return schedule


def _sgd(lr, *, b1, weight_decay, mask, **unused) -> optax.GradientTransformation:
  del unused
  return optax.chain(optax.add_decayed_weights(weight_decay, mask),
                     optax.sgd(lr, momentum=b1 or None))


# optim.name -> the optax optimizer, given the schedule, b1, b2, eps, the weight decay and
# open_clip's decay mask. Each keeps its own name for the decay; b1 / b2 / eps pass through
# where the optimizer has them (lion: b1, b2; muon: its AdamW fallback for leaves that are not
# matrices and its momentum b1; sgd: momentum b1); adafactor keeps its own defaults.
OPTIMIZERS = {
    "adamw": lambda lr, *, b1, b2, eps, weight_decay, mask: optax.adamw(
        lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask),
    "lion": lambda lr, *, b1, b2, eps, weight_decay, mask: optax.lion(
        lr, b1=b1, b2=b2, weight_decay=weight_decay, mask=mask),
    "adafactor": lambda lr, *, b1, b2, eps, weight_decay, mask: optax.adafactor(
        lr, weight_decay_rate=weight_decay, weight_decay_mask=mask),
    "muon": lambda lr, *, b1, b2, eps, weight_decay, mask: optax.contrib.muon(
        lr, beta=b1, weight_decay=weight_decay, weight_decay_mask=mask, adam_b1=b1, adam_b2=b2,
        eps=eps, adam_weight_decay=weight_decay),
    "sgd": _sgd,
}


def make_optimizer(params: Any, optim: OptimOptions, total_steps: int, freeze: Sequence[str] = ()
                   ) -> tuple[optax.GradientTransformation, Any]:
  """Returns (optimizer, frozen mask): `OPTIMIZERS[optim.name]` with the run's schedule to
  `total_steps` on the leaves no `freeze` regex matches. Frozen leaves get `set_to_zero` (no
  optimizer state) and the train step keeps them bitwise unchanged (frozen layers of a partly
  frozen stack too, train/step.py)."""
  name = optim.name
  if name not in OPTIMIZERS:
    raise ValueError(f"optim.name={name!r} is not one of {list(OPTIMIZERS)}")
  frozen = frozen_mask(params, freeze)
  if all(is_frozen(f) for f in jax.tree.leaves(frozen)):
    raise ValueError(f"freeze patterns {list(freeze)} freeze every parameter: nothing to train")
  train = OPTIMIZERS[name](cosine_schedule(optim.lr, optim.warmup_steps, total_steps),
                           b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay, mask=decay_mask)
  if optim.grad_clip_norm:
    train = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), train)
  labels = jax.tree.map(lambda f: "frozen" if is_frozen(f) else "train", frozen)
  return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels), frozen
