"""The jitted training step, with GradCache-style gradient accumulation.

Accumulating gradients over sub-batches the usual way would shrink every sub-batch's
contrastive matrix to its own rows. GradCache (Gao et al., 2021) keeps every negative of the
whole batch, with peak activation memory of one sub-batch:
  1. embed each of the k sub-batches without keeping activations;
  2. take the loss and its gradient w.r.t. all embeddings (and w.r.t. the logit scale/bias,
     which the loss reads directly) on the full global batch;
  3. re-run each sub-batch's towers under `vjp` with its slice of the embedding gradient and
     sum the parameter gradients, each device over its own rows, reduced over the mesh once.
The result equals the gradient of the un-accumulated step (tested to float32 rounding).

Sub-batch j takes the j-th slice of every device's rows, so splitting and merging never move
data between devices.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clipjax.methods import Objective
from clipjax.parallel.mesh import BATCH_AXES
from clipjax.train.ema import update_ema
from clipjax.train.optim import is_frozen

LOGIT_SCALE_MAX = math.log(100)  # open_clip clamps the learnable scale to [0, ln 100]


def split_rows(tree: Any, k: int, mesh: Mesh) -> Any:
  """[N, ...] leaves (batch-sharded over all devices) -> [k, N/k, ...]; sub-batch j holds the
  j-th of k equal slices of every device's rows."""
  n_dev = mesh.size

  def split(x):
    if x.shape[0] % (n_dev * k):
      raise ValueError(f"a batch of {x.shape[0]} rows does not split into {k} sub-batches over "
                       f"{n_dev} devices (optim.accum_steps)")
    c = x.shape[0] // (n_dev * k)
    y = jnp.swapaxes(x.reshape(n_dev, k, c, *x.shape[1:]), 0, 1).reshape(k, n_dev * c,
                                                                         *x.shape[1:])
    return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, P(None, BATCH_AXES)))

  return jax.tree.map(split, tree)


def merge_rows(tree: Any, mesh: Mesh) -> Any:
  """Inverse of `split_rows`: [k, N/k, ...] -> [N, ...] in the original row order."""
  n_dev = mesh.size

  def merge(y):
    k, rows = y.shape[:2]
    c = rows // n_dev
    x = jnp.swapaxes(y.reshape(k, n_dev, c, *y.shape[2:]), 0, 1).reshape(k * rows,
                                                                         *y.shape[2:])
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(BATCH_AXES)))

  return jax.tree.map(merge, tree)


def _per_layer(mask: np.ndarray, leaf: jax.Array) -> jax.Array:
  """A [L] mask shaped to broadcast over a stacked [L, ...] leaf."""
  return jnp.asarray(mask.reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf.dtype)


def _carry_frozen(new: jax.Array, old: jax.Array, frozen) -> jax.Array:
  """The updated leaf, with frozen leaves (or frozen layers of a stack) bitwise as before."""
  if np.ndim(frozen) == 0:
    return old if frozen else new
  return jnp.where(_per_layer(frozen, old).astype(bool), old, new)


def make_grad_fn(objective: Objective, frozen: Any, mesh: Mesh, accum_steps: int = 1):
  """grad_fn(params, batch, key) -> (loss, aux, grads) with grads w.r.t. the trainable leaves
  only (a list, in `jax.tree.leaves` order of the non-frozen leaves), so frozen towers run
  forward only. The frozen layers of a partly frozen stack (scanned towers) get zero gradient,
  so the gradient is the one of the per-block layout."""
  frozen_leaves = jax.tree.leaves(frozen)
  trainable = [i for i, f in enumerate(frozen_leaves) if not is_frozen(f)]
  keep = [None if np.ndim(frozen_leaves[i]) == 0 else ~frozen_leaves[i] for i in trainable]

  def zero_frozen_layers(grads):
    return [g if k is None else g * _per_layer(k, g) for g, k in zip(grads, keep)]

  def with_trainable(params, train_leaves):
    leaves, treedef = jax.tree.flatten(params)
    for j, i in enumerate(trainable):
      leaves[i] = train_leaves[j]
    return treedef.unflatten(leaves)

  def grad_fn(params, batch, key):
    train_leaves = [jax.tree.leaves(params)[i] for i in trainable]
    if accum_steps == 1:
      loss_of = lambda t: objective.loss_fn(with_trainable(params, t), batch, key)
      (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(train_leaves)
      return loss, aux, zero_frozen_layers(grads)

    chunks = split_rows(batch, accum_steps, mesh)
    embed = lambda t, chunk: objective.embed(with_trainable(params, t), chunk)
    emb = merge_rows(jax.lax.map(lambda c: embed(train_leaves, c), chunks), mesh)
    emb = jax.lax.stop_gradient(emb)
    loss_of = lambda t, e: objective.loss(with_trainable(params, t), e, batch, key)
    (loss, aux), (grads, emb_grads) = jax.value_and_grad(loss_of, argnums=(0, 1),
                                                         has_aux=True)(train_leaves, emb)

    towers = tower_gradients(params, train_leaves, chunks,
                             split_rows(emb_grads, accum_steps, mesh))
    return loss, aux, zero_frozen_layers(jax.tree.map(jnp.add, grads, towers))

  def tower_gradients(params, train_leaves, chunks, cotangents):
    """Σ over sub-batches of the towers' VJP with the embeddings' cotangents. Each device sums
    the partial gradients of its own rows and the mesh reduces once at the end: a scan whose
    carry is the replicated gradient would all-reduce it after every sub-batch (accum_steps
    times the traffic, docs/scaling.md)."""
    def local(params, train_leaves, chunks, cotangents):
      def accumulate(total, xs):
        chunk, cotangent = xs
        _, vjp = jax.vjp(lambda t: objective.embed(with_trainable(params, t), chunk), train_leaves)
        return jax.tree.map(jnp.add, total, vjp(cotangent)[0]), None
      zeros = jax.tree.map(jnp.zeros_like, train_leaves)
      total, _ = jax.lax.scan(accumulate, zeros, (chunks, cotangents))
      return jax.lax.psum(total, BATCH_AXES)

    rows = P(None, BATCH_AXES)  # [sub-batch, rows, ...]: every device its rows of each
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), rows, rows), out_specs=P(),
                         check_vma=False)(params, train_leaves, chunks, cotangents)

  return grad_fn


def make_train_step(objective: Objective, tx: optax.GradientTransformation, frozen: Any, mesh: Mesh,
                    *, clamp_scale: bool, accum_steps: int = 1, state_sharding: Any = None,
                    ema_decay: float = 0.0, ema_warmup: bool = False):
  """jitted (state, batch) -> (state, metrics); frozen leaves are carried over bitwise.
  state_sharding: keeps the new state in the given layout (FSDP; parallel/sharding.py).
  A state with "ema" (`clipjax.train.ema.init_ema`) gets its average updated with
  `ema_decay` (and timm's warm-up with `ema_warmup`)."""
  frozen_leaves = jax.tree.leaves(frozen)
  grad_fn = make_grad_fn(objective, frozen, mesh, accum_steps)

  def step(state, batch):
    leaves, treedef = jax.tree.flatten(state["params"])
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    loss, aux, g = grad_fn(state["params"], batch, key)
    it = iter(g)
    grads = treedef.unflatten([jnp.zeros_like(x) if is_frozen(f) else next(it)
                               for x, f in zip(leaves, frozen_leaves)])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = jax.tree.leaves(optax.apply_updates(state["params"], updates))
    params = treedef.unflatten([_carry_frozen(x, old, f)
                                for x, old, f in zip(new, leaves, frozen_leaves)])
    if clamp_scale:
      clip = dict(params["clip"], logit_scale=jnp.clip(params["clip"]["logit_scale"], 0,
                                                       LOGIT_SCALE_MAX))
      params = dict(params, clip=clip)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(g), **aux}
    new_state = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
    if "ema" in state:
      new_state["ema"] = update_ema(state["ema"], params, frozen, new_state["step"], ema_decay,
                                    ema_warmup)
    if state_sharding is not None:
      new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
    return new_state, metrics

  return jax.jit(step, donate_argnums=(0,))
