"""Device meshes and global arrays for data-parallel (+ optional FSDP) training.

One mesh works unchanged on one CPU, on simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on a GPU node and on a multi-host
TPU slice: axes are `("data", "fsdp")`; the batch is split over both (every device sees a
different slice of it), parameters can be sharded over `fsdp`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Multi-host start-up. On Cloud TPU all arguments are discovered; elsewhere (GPU clusters,
  several CPU processes) pass them, or set JAX_COORDINATOR_ADDRESS etc. Safe to call twice."""
  if jax.distributed.is_initialized():
    return
  kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address,
                                  num_processes=num_processes, process_id=process_id).items()
            if v is not None}
  jax.distributed.initialize(**kwargs)


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ("data", "fsdp") mesh over all devices (or `devices`); -1 takes what is left.

  Uses `jax.make_mesh` so that the device order follows the physical topology on TPU/GPU.
  Axes are `Auto` (GSPMD propagation; shard_map reshards its inputs to the specs it needs).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} = {data * fsdp} but there are {n} devices")
  auto = (AxisType.Auto, AxisType.Auto)
  if devices == list(jax.devices()):
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=auto)
  return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES, axis_types=auto)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def host_batch_to_global(batch: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays sharded on dim 0.

  Every process passes its own slice of the global batch, in process order; the global
  batch size is local size x number of processes and must divide over the mesh's devices.
  """
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % mesh.size:
      raise ValueError(f"global batch of {global_rows} rows (shape {x.shape} per host x "
                       f"{jax.process_count()} hosts) does not divide over {mesh.size} devices")
    return jax.make_array_from_process_local_data(sharding, x, (global_rows, *x.shape[1:]))

  return jax.tree.map(put, batch)


def on_mesh(loss_fn: Callable[..., Any], mesh: Mesh, axes: tuple[str, ...] = BATCH_AXES):
  """Runs a loss written for `axis_name` under `shard_map` over the mesh's batch axes.

  Array arguments (positional or keyword, e.g. `labels=`, `key=`) with ndim >= 1 are split on
  dim 0 across devices (the batch); scalars and PRNG keys are replicated; other keyword
  arguments are static. The loss must reduce with psum so its outputs are replicated (global
  values). Returns f(*global_arrays, **kw) -> outputs.
  """
  name = getattr(loss_fn, "__name__", repr(loss_fn))
  params = inspect.signature(loss_fn).parameters
  if "axis_name" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    raise TypeError(f"{name} takes no axis_name; it cannot run on a mesh")
  n_shards = int(np.prod([mesh.shape[a] for a in axes]))

  def spec(arg, a):
    if a is None or np.ndim(a) == 0:
      return P()
    if a.shape[0] % n_shards:
      raise ValueError(f"{arg} of {name}: global batch {a.shape[0]} does not "
                       f"divide over the {n_shards} devices of mesh axes {axes}")
    return P(axes)

  def wrapped(*args, **kwargs):
    is_array = lambda v: isinstance(v, (jax.Array, np.ndarray))
    array_kw = {k: v for k, v in kwargs.items() if is_array(v)}
    static_kw = {k: v for k, v in kwargs.items() if not is_array(v)}
    names = list(array_kw)

    def inner(*flat):
      return loss_fn(*flat[:len(args)], **dict(zip(names, flat[len(args):])), **static_kw,
                     axis_name=axes)

    values = (*args, *array_kw.values())
    specs = tuple(spec(f"argument {i}", a) for i, a in enumerate(args)) + tuple(
        spec(k, v) for k, v in array_kw.items())
    return jax.shard_map(inner, mesh=mesh, in_specs=specs, out_specs=P())(*values)

  return wrapped
