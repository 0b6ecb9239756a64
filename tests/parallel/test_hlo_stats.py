"""Collective bytes read from compiled HLO (clipjax/parallel/hlo_stats.py), checked on a
program whose collectives are known: a while loop's collectives count once per iteration."""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from clipjax.parallel.hlo_stats import collective_bytes
from clipjax.parallel.mesh import make_mesh


def test_collective_bytes_of_a_known_program():
  mesh = make_mesh()  # 8 simulated devices
  n = mesh.size

  def per_device(x, y):
    gathered = jax.lax.all_gather(x, "data", tiled=True)  # [n*4, 16] f32
    # a loop-carried psum cannot be hoisted: 5 all-reduces of [8] f32
    y = jax.lax.fori_loop(0, 5, lambda i, c: jax.lax.psum(c * 0.5 + i, "data"), y)
    return gathered.sum() + y.sum()

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P()), out_specs=P(),
                            check_vma=False))
  x, y = jnp.ones((n * 4, 16)), jnp.ones((8,))
  got = collective_bytes(f.lower(x, y).compile().as_text())
  assert got["all-gather"] == n * 4 * 16 * 4
  assert got["all-reduce"] == 5 * 8 * 4
  assert set(got) == {"all-gather", "all-reduce"}
