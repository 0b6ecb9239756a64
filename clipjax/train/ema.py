"""An exponential moving average of the trained weights (`optim.ema_decay`), updated inside
the jitted step and saved with the train state, so a resumed run continues it bitwise.

After optimizer update n (n = 1, 2, ...): ema ← decay_n · ema + (1 − decay_n) · params, with
timm's `ModelEmaV3` schedule (what open_clip's trainer uses): decay_1 = 0 (the first update
copies the weights), then the constant `decay`, or with `warmup`
min(decay, 1 − (1 + (n − 1))^(−2/3)). Only trained leaves are averaged; a frozen leaf's
average is the leaf itself, so the state holds a scalar placeholder for it.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from clipjax.train.optim import is_frozen

WARMUP_POWER = 2 / 3  # timm's warmup_power (warmup_gamma 1)


def ema_decay(updates: jax.Array, decay: float, warmup: bool = False) -> jax.Array:
  """The decay of update number `updates` (1-based): timm ModelEmaV3.get_decay(updates)."""
  n = jnp.maximum(jnp.asarray(updates, jnp.float32) - 1.0, 0.0)
  value = jnp.minimum(decay, 1.0 - (1.0 + n) ** -WARMUP_POWER) if warmup else decay
  return jnp.where(n <= 0, 0.0, jnp.maximum(value, 0.0))


def init_ema(params: Any, frozen: Any) -> Any:
  """The average before any update: copies of the trained leaves (real copies: the step
  donates its state), a float32 scalar placeholder for each frozen leaf."""
  return jax.tree.map(lambda x, f: jnp.zeros((), jnp.float32) if is_frozen(f)
                      else jnp.array(x, copy=True), params, frozen)


def update_ema(ema: Any, params: Any, frozen: Any, updates: jax.Array, decay: float,
               warmup: bool = False) -> Any:
  """The average after update number `updates` (params: the weights after it)."""
  d = ema_decay(updates, decay, warmup)
  return jax.tree.map(lambda e, x, f: e if is_frozen(f) else
                      (d * e.astype(jnp.float32) + (1 - d) * x.astype(jnp.float32)
                       ).astype(x.dtype), ema, params, frozen)


def ema_params(ema: Any, params: Any, frozen: Any) -> Any:
  """The averaged weights as a full parameter tree (frozen leaves from `params`)."""
  return jax.tree.map(lambda e, x, f: x if is_frozen(f) else e, ema, params, frozen)
