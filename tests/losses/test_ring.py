"""The ring exchange (`losses/ring.py`) against the all-gather path and the float64 NumPy
references, on 8 simulated devices: value and gradient with respect to every embedding and the
scale / bias, with labels, uneven tiles and a data x fsdp mesh."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import np_reference as ref
import numpy as np
import pytest
from conftest import rel_err

from clipjax import losses
from clipjax.losses import LossOptions
from clipjax.parallel.mesh import make_mesh, on_mesh

# float32 sums in another order than the all-gather path: observed <= 3e-7 (values) and
# <= 2e-6 (gradients) relative to each one's scale.
EQUAL_TOL = 1e-5
# against float64 NumPy, as tests/losses/test_losses.py
VALUE_TOL, GRAD_TOL = 1e-5, 2e-5
D, SCALE, BIAS = 8, 10.0, -3.0


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _labels(b, seed=3):
  """Classes shared by several rows (UniCL-style targets)."""
  return np.random.default_rng(seed).integers(0, b // 3, b).astype(np.int32)


# name -> (loss(*embeddings, scale, axis_name, options), number of embeddings,
#          float64 reference(*embeddings, scale))
CASES = {
    "clip": (lambda i, t, s, **kw: losses.clip_loss(i, t, s, **kw), 2, ref.clip),
    "clip_bias": (lambda i, t, s, **kw: losses.clip_loss(i, t, s, jnp.float32(BIAS), **kw), 2,
                  lambda i, t, s: ref.clip(i, t, s, bias=BIAS)),
    "query": (lambda q, k, s, **kw: losses.query_loss(q, k, s, **kw), 2, ref.query),
    "query_bidirectional": (
        lambda q, k, s, options, **kw: losses.query_loss(
            q, k, s, options=dataclasses.replace(options, bidirectional=True), **kw), 2,
        lambda q, k, s: ref.query(q, k, s, bidirectional=True)),
    "siglip": (lambda i, t, s, **kw: losses.siglip_loss(i, t, s, jnp.float32(BIAS), **kw), 2,
               lambda i, t, s: ref.sigmoid_loss(i, t, s, BIAS)),
    "three_tower": (lambda i, t, g, s, **kw: losses.three_tower_loss(i, t, g, s, **kw), 3,
                    ref.three_tower),
    "three_tower_sigmoid": (
        lambda i, t, g, s, options, **kw: losses.three_tower_loss(
            i, t, g, s, logit_bias=jnp.float32(BIAS),
            options=dataclasses.replace(options, form="sigmoid"), **kw), 3,
        lambda i, t, g, s: ref.three_tower_sigmoid(i, t, g, s, BIAS)),
    "draft_contrastive": (
        lambda i, y, z, s, **kw: losses.draft_contrastive_loss(i, y, z, s, **kw), 3,
        ref.draft_contrastive),
    "draft_contrastive_sigmoid": (
        lambda i, y, z, s, options, **kw: losses.draft_contrastive_loss(
            i, y, z, s, logit_bias=jnp.float32(BIAS),
            options=dataclasses.replace(options, form="sigmoid"), **kw), 3,
        lambda i, y, z, s: ref.draft_contrastive_sigmoid(i, y, z, s, BIAS)),
    "mult": (lambda i, t, m, s, **kw: losses.mult_loss(i, t, m, s, 0.3, 0.3, **kw), 3,
             lambda i, t, m, s: ref.mult(i, t, m, s, 0.3, 0.3)),
    # τ = 1/s: the scale argument is the inverse temperature here
    "text_infonce": (lambda q, p, s, **kw: losses.text_infonce(q, p, tau=1.0 / SCALE, **kw), 2,
                     lambda q, p, s: ref.infonce(q, p, tau=1.0 / SCALE)),
    # one hard negative per pair: a device's keys (positives + negatives) outnumber its queries
    "text_infonce_negatives": (lambda q, p, n, s, **kw: losses.text_infonce(
        q, p, n[:, None, :], tau=1.0 / SCALE, **kw), 3,
                               lambda q, p, n, s: ref.infonce(q, p, n[:, None, :],
                                                              tau=1.0 / SCALE)),
}


def _grads(mesh, fn, arrays, exchange, block, labels=None):
  """Value and gradients (embeddings, then the scale) on the mesh."""
  extra = {} if labels is None else {"labels": jnp.asarray(labels)}
  on = on_mesh(functools.partial(fn, options=LossOptions(exchange=exchange, block_size=block)),
               mesh)
  f = lambda *xs: on(*xs[:-1], jnp.float32(1) * xs[-1], **extra)
  args = [jnp.asarray(a, jnp.float32) for a in arrays] + [jnp.float32(SCALE)]
  return jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args)))))(*args)


# (mesh, global rows, block): the dense ring; two tiles of 2 on 4 rows per device, so the moving
# shards travel in halves (`ring._halves`), on a 2 x 4 mesh that rings over both batch axes;
# uneven tiles of 3 on 5 rows (pick_block: one of 5).
SETTINGS = (((8, 1), 24, None), ((2, 4), 32, 2), ((8, 1), 40, 3))
# One loss per ring kernel (symmetric CE, the sigmoid pairs, row CE) runs every setting; every
# other loss is built on those kernels and runs one setting, in turn.
KERNELS = ("clip", "siglip", "query")
RING_CASES = [(name, *setting) for name in KERNELS for setting in SETTINGS] + [
    (name, *SETTINGS[i % len(SETTINGS)])
    for i, name in enumerate(sorted(set(CASES) - set(KERNELS)))]


@pytest.mark.parametrize("name, mesh_shape, rows, block", RING_CASES)
def test_ring_equals_all_gather_and_numpy(name, mesh_shape, rows, block):
  """Value and gradients on the ring equal the all-gather path's and the float64 reference's
  (`rows` global rows: 3, 4 or 5 per device); numeric gradients once per loss."""
  fn, count, np_fn = CASES[name]
  mesh = make_mesh(*mesh_shape)
  rng = np.random.default_rng(rows)
  arrays = [_unit(rng, rows, D) for _ in range(count)]
  value, grads = _grads(mesh, fn, arrays, "ring", block)
  gathered, gathered_grads = _grads(mesh, fn, arrays, "all_gather", block)
  assert rel_err(value, gathered) < EQUAL_TOL
  for i, (g, h) in enumerate(zip(grads, gathered_grads)):
    assert rel_err(g, h) < EQUAL_TOL, f"{name}: gradient of argument {i}"
  assert rel_err(value, np_fn(*arrays, SCALE)) < VALUE_TOL
  if name not in KERNELS or block is None:  # numeric gradients once per loss
    for i, (g, n) in enumerate(zip(grads, ref.numeric_grad(np_fn, [*arrays, SCALE]))):
      assert rel_err(g, n) < GRAD_TOL, f"{name}: gradient of argument {i} vs NumPy"


@pytest.mark.parametrize("estimator, mesh_shape, rows, block", [
    ("rff", (8, 1), 24, None), ("rff", (2, 4), 32, 2), ("rff", (8, 1), 40, 3),
    ("subsample", (8, 1), 24, None), ("full", (8, 1), 24, None), ("full", (2, 4), 32, 2)])
def test_draft_ring_equals_all_gather_and_numpy(estimator, mesh_shape, rows, block):
  """The whole DRAFT loss (contrastive + MMD, σ₀ from the psum-reduced key statistics): the
  ring's value and gradients equal the all-gather path's and the float64 reference's. The MMD
  term enters squared: at 24 rows the subsample U-statistic is ~6e-6, the difference of O(1)
  float32 sums, and sqrt's 1/(2√v) would amplify their rounding past the tolerance (the sqrt
  sits outside the exchange; tests/losses/test_losses.py checks it)."""
  key = jax.random.key(4)
  cfg = losses.MMDConfig(estimator, subsample_size=256, squared=True)
  fn = lambda i, y, z, s, **kw: losses.draft_loss(i, y, z, s, key=key, mmd=cfg, **kw)[0]
  mesh = make_mesh(*mesh_shape)
  rng = np.random.default_rng(rows + 1)
  i, y, z = (_unit(rng, rows, D) for _ in range(3))
  z = 0.6 * z + 0.4 * i  # the dialogue similarities differ in distribution from the captions'
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  value, grads = _grads(mesh, fn, [i, y, z], "ring", block)
  gathered, gathered_grads = _grads(mesh, fn, [i, y, z], "all_gather", block)
  assert rel_err(value, gathered) < EQUAL_TOL
  for n, (g, h) in enumerate(zip(grads, gathered_grads)):
    assert rel_err(g, h) < EQUAL_TOL, f"{estimator}: gradient of argument {n}"
  np_fn = ref.draft(estimator, key, False, True, i, y, z, SCALE)  # σ₀ fixed at these inputs
  assert rel_err(value, np_fn(i, y, z, SCALE)) < VALUE_TOL
  # numeric gradients of the O(B⁴) full estimator take half a minute: its gradient against
  # NumPy is checked in tests/losses/test_losses.py, the ring's against the all-gather above
  if mesh_shape == (8, 1) and block is None and estimator != "full":
    for n, (g, h) in enumerate(zip(grads, ref.numeric_grad(np_fn, [i, y, z, SCALE]))):
      assert rel_err(g, h) < GRAD_TOL, f"{estimator}: gradient of argument {n} vs NumPy"


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_labels_travel_with_their_keys(name):
  """UniCL-style shared labels: positives sit on other devices, found only if the labels move
  with the keys round the ring."""
  fn, _, _ = CASES[name]
  mesh = make_mesh()
  rng = np.random.default_rng(5)
  arrays, labels = [_unit(rng, 24, D) for _ in range(2)], _labels(24)
  value, grads = _grads(mesh, fn, arrays, "ring", None, labels)
  gathered, gathered_grads = _grads(mesh, fn, arrays, "all_gather", None, labels)
  np_fn = {"clip": lambda i, t, s: ref.clip(i, t, s, labels=labels),
           "siglip": lambda i, t, s: ref.sigmoid_loss(i, t, s, BIAS, labels=labels)}[name]
  assert rel_err(value, gathered) < EQUAL_TOL
  assert rel_err(value, np_fn(*arrays, SCALE)) < VALUE_TOL
  for g, h in zip(grads, gathered_grads):
    assert rel_err(g, h) < EQUAL_TOL


def test_the_bias_gradient_goes_round_the_ring():
  mesh = make_mesh()
  rng = np.random.default_rng(6)
  i, t = (jnp.asarray(_unit(rng, 16, D), jnp.float32) for _ in range(2))

  def bias_grad(exchange):
    on = on_mesh(lambda i, t, b, axis_name: losses.siglip_loss(
        i, t, jnp.float32(SCALE), b, axis_name=axis_name,
        options=LossOptions(exchange=exchange)), mesh)
    return jax.jit(jax.grad(lambda b: on(i, t, jnp.float32(1) * b)))(jnp.float32(BIAS))

  numeric = ref.numeric_grad(lambda b: ref.sigmoid_loss(np.asarray(i, np.float64),
                                                        np.asarray(t, np.float64), SCALE, b),
                             [BIAS])[0]
  assert rel_err(bias_grad("ring"), bias_grad("all_gather")) < EQUAL_TOL
  assert rel_err(bias_grad("ring"), numeric) < GRAD_TOL


def test_the_ring_loss_memory_follows_the_device_rows_not_the_global_batch():
  """Compiled (never run) forward + backward of the CLIP loss with 64 rows per device on 2 and
  on 8 devices: the ring's temporaries stay the same while the global batch grows 4x; the
  all-gather path's grow with it."""
  rows_per_device, dim = 64, 128

  def temp_bytes(exchange, devices):
    mesh = make_mesh(devices, 1, jax.devices()[:devices])
    x = jax.ShapeDtypeStruct((rows_per_device * devices, dim), jnp.float32)
    on = on_mesh(functools.partial(losses.clip_loss,
                                   options=LossOptions(exchange=exchange, block_size=16)), mesh)
    step = jax.jit(jax.value_and_grad(lambda i, t: on(i, t, jnp.float32(SCALE)), (0, 1)))
    return step.lower(x, x).compile().memory_analysis().temp_size_in_bytes

  ring = [temp_bytes("ring", n) for n in (2, 8)]
  gathered = [temp_bytes("all_gather", n) for n in (2, 8)]
  assert ring[1] <= ring[0] * 1.1, ring  # flat in the global batch
  assert gathered[1] >= gathered[0] * 3, gathered  # ~4x: [B, D] keys and their gradient
  assert ring[1] < gathered[1] / 2, (ring, gathered)


def _receive_then_compute(q, k, axis_name):
  """The ring done wrong (the negative control of the overlap checks): each step computes on
  the shard it has just received."""
  perm = [(i, (i + 1) % 8) for i in range(8)]

  def hop(carry, _):
    held, acc = carry
    held = jax.lax.ppermute(held, axis_name, perm)
    return (held, acc + jnp.sum(jnp.dot(q, held.T))), None
  start = jnp.zeros((), jnp.float32) + 0.0 * q[0, 0]  # varying over the mesh, as acc
  return jax.lax.psum(jax.lax.scan(hop, (k, start), None, length=8)[0][1], axis_name)


def test_each_ring_step_sends_what_it_does_not_compute_on():
  """In the compiled programs, every collective-permute of a ring step sends a shard that step
  does not compute with (its result only passes to the next step), so the transfer can overlap
  the step's compute: XLA runs them as asynchronous start / done pairs on GPU and TPU (the CPU
  backend here keeps them synchronous, so the test reads the data flow, not the pair). A ring
  that computes on what it just received is caught."""
  from clipjax.parallel.hlo_stats import permutes_overlap_compute
  mesh = make_mesh()
  x = jax.ShapeDtypeStruct((512, D), jnp.float32)
  for name, (fn, count, _) in (("clip", CASES["clip"]), ("siglip", CASES["siglip"])):
    on = on_mesh(functools.partial(fn, options=LossOptions(exchange="ring", block_size=16)), mesh)
    step = jax.jit(jax.value_and_grad(lambda i, t: on(i, t, jnp.float32(SCALE)), (0, 1)))
    hlo = step.lower(x, x).compile().as_text()
    assert hlo.count("collective-permute(") >= 5, name  # forward and both backward rings
    assert permutes_overlap_compute(hlo) == [], name

  hlo = jax.jit(on_mesh(_receive_then_compute, mesh)).lower(x, x).compile().as_text()
  assert permutes_overlap_compute(hlo), "the check must see compute on the received shard"


def test_tpu_schedules_each_ring_transfer_under_compute():
  """Compiled (not run: libtpu's compile-only client, no TPU here) for an 8-chip TPU v5e slice,
  the ring losses' collective-permutes are asynchronous start / done pairs, and in every ring
  step the shard's transfer has the step's tile loop scheduled between its start and its done:
  the overlap itself, which the CPU backend (synchronous permutes) cannot show. A ring that
  computes on what it just received is caught."""
  from jax.experimental import topologies
  from jax.sharding import NamedSharding, PartitionSpec

  from clipjax.parallel.hlo_stats import async_permutes_overlap
  chips = topologies.get_topology_desc(topology_name="v5e:2x4", platform="tpu").devices
  mesh = make_mesh(8, 1, chips)
  x = jax.ShapeDtypeStruct((8 * 512, 128), jnp.float32,
                           sharding=NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
  key = jax.random.key(0)
  cases = {"clip": (CASES["clip"][0], 2), "siglip": (CASES["siglip"][0], 2),
           "draft": (lambda i, y, z, s, **kw: losses.draft_loss(i, y, z, s, key=key, **kw)[0], 3)}
  for name, (fn, count) in cases.items():
    on = on_mesh(functools.partial(fn, options=LossOptions(exchange="ring", block_size=128)),
                 mesh)
    step = jax.jit(jax.value_and_grad(lambda *e: on(*e, jnp.float32(SCALE)), tuple(range(count))))
    hlo = step.lower(*[x] * count).compile().as_text()
    assert hlo.count("collective-permute-start") >= 3, name  # forward and both backward rings
    assert async_permutes_overlap(hlo) == [], name

  hlo = jax.jit(on_mesh(_receive_then_compute, mesh)).lower(x, x).compile().as_text()
  assert async_permutes_overlap(hlo), "the check must see the transfer waited for at once"


def test_unsupported_combinations_are_named():
  """A bad setting fails where the options are made; each loss names what it would ignore."""
  with pytest.raises(ValueError, match="exchange must be one of"):
    losses.clip_loss(jnp.ones((2, 4)), jnp.ones((2, 4)), 1.0,
                     options=LossOptions(exchange="gossip"))
  with pytest.raises(ValueError, match="block_size must be None"):
    LossOptions(block_size=0)
  ring = LossOptions(exchange="ring", block_size=64)
  assert losses.unread(losses.distill_loss, ring) == ("block_size", "exchange")
  assert losses.unread(losses.clip_loss, ring) == ()
  assert losses.unread(losses.clip_loss, LossOptions(bidirectional=True)) == ("bidirectional",)
  assert losses.unread(losses.draft_loss, LossOptions("sigmoid", block_size=8)) == ()
