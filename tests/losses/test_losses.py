"""Losses on an 8-device mesh against float64 NumPy references (values from the formulas,
gradients by central differences), dense vs tiled, and open_clip's ClipLoss / SigLipLoss."""
import functools

import jax
import jax.numpy as jnp
import np_reference as ref
import numpy as np
import pytest
from conftest import rel_err

from clipjax import losses
from clipjax.losses import LossOptions
from clipjax.losses.mmd import MMDConfig, mmd2, subsample_positions
from clipjax.parallel.mesh import make_mesh, on_mesh

# float32 on the mesh vs float64: observed value errors <= 2e-7 and gradient errors <= 3e-6
# relative to each gradient's scale (logits up to s = 10 here).
VALUE_TOL, GRAD_TOL = 1e-5, 2e-5
B, D, SCALE = 16, 8, 10.0


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8"
  return make_mesh()


def unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _embeddings(n=3, seed=0, b=B):
  rng = np.random.default_rng(seed)
  return [unit(rng, b, D) for _ in range(n)]


def _check(mesh, loss_fn, np_fn, arrays, **kw):
  """Value and gradients (every array argument and the scale, last) on the mesh vs NumPy."""
  args = [*arrays, SCALE]
  on = on_mesh(loss_fn, mesh)
  f = lambda *xs: on(*xs[:-1], jnp.float32(1) * xs[-1], **kw)
  value, grads = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args)))))(
      *[jnp.asarray(a, jnp.float32) for a in args])
  want = np_fn(*args)
  assert rel_err(value, want) < VALUE_TOL, (float(value), want)
  for i, (g, n) in enumerate(zip(grads, ref.numeric_grad(np_fn, args))):
    assert rel_err(g, n) < GRAD_TOL, f"gradient of argument {i}: rel err {rel_err(g, n)}"


def test_clip_loss(mesh):
  _check(mesh, losses.clip_loss, ref.clip, _embeddings(2))


def test_clip_loss_with_bias_tiled(mesh):
  fn = functools.partial(losses.clip_loss, logit_bias=jnp.float32(-2.5),
                         options=LossOptions(block_size=4))
  _check(mesh, lambda i, t, s, axis_name: fn(i, t, s, axis_name=axis_name),
         lambda i, t, s: ref.clip(i, t, s, bias=-2.5), _embeddings(2))


def test_unicl_with_shared_labels(mesh):
  labels = np.repeat(np.arange(B // 4), 4)[np.random.default_rng(3).permutation(B)]
  labels[:3] = [100, 101, 102]  # image-text pairs without a class: unique labels
  for block in (None, 4):
    _check(mesh, lambda i, t, s, axis_name, block=block: losses.unicl_loss(
               i, t, jnp.asarray(labels)[_rows(axis_name)], s,
               options=LossOptions(block_size=block), axis_name=axis_name),
           lambda i, t, s: ref.clip(i, t, s, labels=labels), _embeddings(2))


def _rows(axis_name):
  """This shard's slice of a global [B] array captured by closure."""
  n = B // jax.lax.axis_size(axis_name)
  return jax.lax.axis_index(axis_name) * n + jnp.arange(n)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_three_tower_loss(mesh, bidirectional):
  _check(mesh, functools.partial(losses.three_tower_loss, a=0.65,
                                 options=LossOptions(bidirectional=bidirectional)),
         lambda i, t, g, s: ref.three_tower(i, t, g, s, 0.65, bidirectional), _embeddings(3))


def test_draft_contrastive_loss(mesh):
  _check(mesh, functools.partial(losses.draft_contrastive_loss, a=0.65),
         lambda i, y, z, s: ref.draft_contrastive(i, y, z, s, 0.65), _embeddings(3))


@pytest.mark.parametrize("block", [None, 4])
def test_siglip_loss(mesh, block):
  _check(mesh, lambda i, t, s, axis_name: losses.siglip_loss(
             i, t, s, jnp.float32(-10.0), options=LossOptions(block_size=block),
             axis_name=axis_name),
         lambda i, t, s: ref.sigmoid_loss(i, t, s, -10.0), _embeddings(2))


def test_siglip_loss_with_shared_labels(mesh):
  labels = np.repeat(np.arange(B // 4), 4)[np.random.default_rng(4).permutation(B)]
  _check(mesh, lambda i, t, s, axis_name: losses.siglip_loss(
             i, t, s, jnp.float32(-3.0), labels=jnp.asarray(labels)[_rows(axis_name)],
             options=LossOptions(block_size=4), axis_name=axis_name),
         lambda i, t, s: ref.sigmoid_loss(i, t, s, -3.0, labels), _embeddings(2))


@pytest.mark.parametrize("block", [None, 4])
def test_sigmoid_form_of_the_adaptation_losses(mesh, block):
  """docs/methods.md §7b: CLIP-3Modal and DRAFT with each query-side term SL(Q, K) and the base's
  t and b; DRAFT's MMD is unchanged (the bias cancels in the kernel and in σ)."""
  bias, key = -4.0, jax.random.key(3)
  i, y, z = _embeddings(3, seed=2)
  kw = dict(logit_bias=jnp.float32(bias), options=LossOptions("sigmoid", block_size=block))
  _check(mesh, lambda i, t, g, s, axis_name: losses.three_tower_loss(
             i, t, g, s, a=0.65, axis_name=axis_name, **kw),
         lambda i, t, g, s: ref.three_tower_sigmoid(i, t, g, s, bias), [i, y, z])
  _check(mesh, lambda i, y, z, s, axis_name: losses.draft_contrastive_loss(
             i, y, z, s, a=0.65, axis_name=axis_name, **kw),
         lambda i, y, z, s: ref.draft_contrastive_sigmoid(i, y, z, s, bias), [i, y, z])
  cfg = MMDConfig("full")
  mmd_only = ref.draft("full", key, False, False, i, y, z, SCALE)
  _check(mesh, lambda i, y, z, s, axis_name: losses.draft_loss(
             i, y, z, s, key=key, mmd=cfg, axis_name=axis_name, **kw)[0],
         lambda i, y, z, s: (mmd_only(i, y, z, s) - ref.draft_contrastive(i, y, z, s, 0.65)
                             + ref.draft_contrastive_sigmoid(i, y, z, s, bias)), [i, y, z])


def test_tiled_sigmoid_gradient_of_the_bias(mesh):
  """The tiled backward's d/db (and d/dt) equal the dense path's."""
  i, t = (jnp.asarray(x, jnp.float32) for x in _embeddings(2, seed=8, b=64))
  out = {}
  for block in (None, 16):
    f = on_mesh(lambda i, t, s, b, axis_name, block=block: losses.siglip_loss(
        i, t, s, b, options=LossOptions(block_size=block), axis_name=axis_name), mesh)
    out[block] = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(
        i, t, jnp.float32(SCALE), jnp.float32(-5.0))
  assert rel_err(out[16][0], out[None][0]) < 1e-6
  for g_tiled, g_dense in zip(out[16][1], out[None][1]):
    assert rel_err(g_tiled, g_dense) < 1e-5


def test_mult_loss(mesh):
  _check(mesh, functools.partial(losses.mult_loss, a=0.5, b=0.3),
         lambda i, t, m, s: ref.mult(i, t, m, s, 0.5, 0.3), _embeddings(3))


@pytest.mark.parametrize("with_negatives", [False, True])
def test_text_infonce(mesh, with_negatives):
  q, p = _embeddings(2)
  arrays = [q, p]
  if with_negatives:
    arrays.append(unit(np.random.default_rng(5), B, 3, D))
  # tau is fixed (0.05): the trailing scale argument is unused by this loss
  _check(mesh, lambda *xs, axis_name: losses.text_infonce(*xs[:-1], tau=0.05, axis_name=axis_name),
         lambda *xs: ref.infonce(*xs[:-1], tau=0.05), arrays)


@pytest.mark.parametrize("estimator,multi_kernel,squared,block", [
    ("full", False, False, None), ("full", True, True, None), ("subsample", False, False, None),
    ("rff", False, False, None), ("rff", True, True, 4), ("rff", False, False, 4)])
def test_draft_loss(mesh, estimator, multi_kernel, squared, block):
  key = jax.random.key(42)
  cfg = MMDConfig(estimator, squared=squared, multi_kernel=multi_kernel, subsample_size=256)
  i, y, z = _embeddings(3, seed=1)
  # make the dialogue similarities differ in distribution from the caption ones
  z = 0.6 * z + 0.4 * i
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  _check(mesh, lambda i, y, z, s, axis_name: losses.draft_loss(
      i, y, z, s, key=key, mmd=cfg, options=LossOptions(block_size=block),
      axis_name=axis_name)[0],
      ref.draft(estimator, key, multi_kernel, squared, i, y, z, SCALE), [i, y, z])


@pytest.mark.parametrize("name", ["clip", "draft_rff", "three_tower"])
def test_tiled_equals_dense(mesh, name):
  i, t, z = (jnp.asarray(x, jnp.float32) for x in _embeddings(3, seed=7, b=64))
  key = jax.random.key(0)
  fns = {
      "clip": lambda i, t, z, s, **kw: losses.clip_loss(i, t, s, **kw),
      "draft_rff": lambda i, t, z, s, **kw: losses.draft_loss(i, t, z, s, key=key, **kw)[0],
      "three_tower": lambda i, t, z, s, **kw: losses.three_tower_loss(i, t, z, s, **kw),
  }
  out = {}
  for block in (None, 16):
    tiles = LossOptions(block_size=block)
    f = on_mesh(lambda i, t, z, s, axis_name: fns[name](i, t, z, s, options=tiles,
                                                        axis_name=axis_name), mesh)
    out[block] = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(i, t, z, jnp.float32(SCALE))
  assert rel_err(out[16][0], out[None][0]) < 1e-6
  for g_tiled, g_dense in zip(out[16][1], out[None][1]):
    assert rel_err(g_tiled, g_dense) < 1e-5


def test_single_device_equals_mesh(mesh):
  """The same function, unsharded on one device, gives the mesh's global value."""
  i, t = (jnp.asarray(x, jnp.float32) for x in _embeddings(2))
  single = losses.clip_loss(i, t, SCALE)
  assert rel_err(single, on_mesh(losses.clip_loss, mesh)(i, t, jnp.float32(SCALE))) < 1e-6


def test_matches_open_clip_losses():
  import open_clip.loss as ocl
  import torch
  i, t = _embeddings(2, seed=9)
  for name in ("clip", "siglip"):
    ti, tt = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (i, t))
    ts = torch.tensor(SCALE, requires_grad=True)
    tb = torch.tensor(-10.0, requires_grad=True)
    if name == "clip":
      value = ocl.ClipLoss()(ti, tt, ts)
      f = lambda i, t, s, b: losses.clip_loss(i, t, s)
    else:
      value = ocl.SigLipLoss()(ti, tt, ts, tb)
      f = lambda i, t, s, b: losses.siglip_loss(i, t, s, b)
    value.backward()
    ours, grads = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(
        jnp.asarray(i, jnp.float32), jnp.asarray(t, jnp.float32), jnp.float32(SCALE),
        jnp.float32(-10.0))
    assert rel_err(ours, value.item()) < 1e-6
    for g, tg in zip(grads, (ti.grad, tt.grad, ts.grad, tb.grad if name == "siglip" else None)):
      if tg is not None:
        assert rel_err(g, tg.numpy()) < 1e-5


def test_distill_loss_equals_open_clip_on_the_mesh(mesh):
  """open_clip's DistillClipLoss (contrastive + distill, summed as its trainer does) on
  random student (D = 8) and teacher (D' = 12) embeddings; ours on the 8-device mesh, each
  device its rows. Value and the student's gradients in float32 (rel 1e-6 / 1e-5); the
  teacher gets none."""
  import open_clip.loss as ocl
  import torch
  rng = np.random.default_rng(21)
  i, t = _embeddings(2, seed=20)
  ti, tt = unit(rng, B, 12), unit(rng, B, 12)
  torch_args = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (i, t)]
  scale = torch.tensor(SCALE, requires_grad=True)
  parts = ocl.DistillClipLoss()(*torch_args, scale, torch.tensor(ti, dtype=torch.float32),
                                torch.tensor(tt, dtype=torch.float32), torch.tensor(30.0),
                                output_dict=True)
  value = parts["contrastive_loss"] + parts["distill_loss"]
  value.backward()
  f = on_mesh(lambda i, t, s, ti, tt, axis_name: losses.distill_loss(
      i, t, s, ti, tt, jnp.float32(30.0), axis_name=axis_name), mesh)
  (ours, aux), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))(
      *(jnp.asarray(x, jnp.float32) for x in (i, t)), jnp.float32(SCALE),
      *(jnp.asarray(x, jnp.float32) for x in (ti, tt)))
  assert rel_err(ours, value.item()) < 1e-6
  assert rel_err(aux["distill"], parts["distill_loss"].item()) < 1e-6
  for g, tg in zip(grads, (*(a.grad for a in torch_args), scale.grad)):
    assert rel_err(g, tg.numpy()) < 1e-5
  assert not np.asarray(grads[3]).any()  # the teacher is frozen


def test_rff_is_unbiased_and_its_spread_falls_like_inverse_sqrt_r():
  i, y, z = _embeddings(3, seed=11)
  z = 0.5 * z + 0.5 * i
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  sig = np.array([ref.sigma0(y, z, i, SCALE)])
  exact = ref.mmd2_full(ref.sims(y, i, SCALE), ref.sims(z, i, SCALE), sig)
  args = [jnp.asarray(x, jnp.float32) for x in (y, z, i)]
  draw = jax.jit(jax.vmap(lambda k, r: losses.mmd2(*args, SCALE, key=k,
                                                   config=MMDConfig("rff", num_features=r))[0],
                          in_axes=(0, None)), static_argnums=1)
  spreads = {}
  for r in (16, 256):
    draws = np.asarray(draw(jax.random.split(jax.random.key(r), 50), r), np.float64)
    spreads[r] = draws.std(ddof=1)
    assert abs(draws.mean() - exact) < 3 * spreads[r] / np.sqrt(50), (r, draws.mean(), exact)
  assert 2.5 < spreads[16] / spreads[256] < 6.4  # sqrt(256 / 16) = 4


def _largest_buffer(compiled_text: str) -> int:
  import re
  sizes = [int(np.prod([int(d) for d in dims.split(",") if d]))
           for dims in re.findall(r"f32\[([\d,]*)\]", compiled_text)]
  return max(sizes)


@pytest.mark.parametrize("name", ["clip", "draft_rff"])
def test_tiled_path_never_holds_the_logit_matrix(mesh, name):
  """Per-device buffers of the compiled forward+backward: dense holds b_local x B_global,
  tiled at most b_local x block (B=512 over 8 devices: b=64; block=32; D=4, F=64)."""
  b_global, dim, block = 512, 4, 32
  rng = np.random.default_rng(0)
  i, t, z = (jnp.asarray(unit(rng, b_global, dim), jnp.float32) for _ in range(3))
  key = jax.random.key(0)
  fn = {"clip": lambda i, t, z, s, **kw: losses.clip_loss(i, t, s, **kw),
        "draft_rff": lambda i, t, z, s, **kw: losses.draft_loss(i, t, z, s, key=key, **kw)[0]}[name]
  largest = {}
  for blk in (None, block):
    tiles = LossOptions(block_size=blk)
    f = on_mesh(lambda i, t, z, s, axis_name: fn(i, t, z, s, options=tiles, axis_name=axis_name),
                mesh)
    text = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3))).lower(
        i, t, z, jnp.float32(SCALE)).compile().as_text()
    largest[blk] = _largest_buffer(text)
  local = b_global // 8
  assert largest[None] >= local * b_global
  assert largest[block] <= local * block, largest


def test_bad_inputs_are_clear_errors(mesh):
  i, t = (jnp.asarray(x, jnp.float32) for x in _embeddings(2))
  with pytest.raises(ValueError, match="global batch 12 does not divide over the 8 devices"):
    on_mesh(losses.clip_loss, mesh)(i[:12], t[:12], jnp.float32(SCALE))
  with pytest.raises(ValueError, match=r"text_emb has shape \[16, 4\] but image_emb has \[16, 8\]"):
    losses.clip_loss(i, t[:, :4], SCALE)
  with pytest.raises(ValueError, match="text_emb is bfloat16 but image_emb is float32"):
    losses.clip_loss(i, t.astype(jnp.bfloat16), SCALE)
  with pytest.raises(ValueError, match="empty batch"):
    losses.clip_loss(i[:0], t[:0], SCALE)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    losses.draft_loss(i, t, t, SCALE)
  with pytest.raises(ValueError, match="mmd.estimator must be one of"):
    MMDConfig("exact")
  with pytest.raises(ValueError, match="a \\+ b < 1"):
    losses.mult_loss(i, t, t, SCALE, 0.6, 0.5)
  with pytest.raises(ValueError, match="the sigmoid form needs the base's logit_bias"):
    losses.three_tower_loss(i, t, t, SCALE, options=LossOptions("sigmoid"))
  with pytest.raises(ValueError, match="bidirectional has no meaning in the sigmoid form"):
    losses.draft_contrastive_loss(i, t, t, SCALE, logit_bias=-1.0,
                                  options=LossOptions("sigmoid", bidirectional=True))
  with pytest.raises(ValueError, match=r"form must be one of \[.*\], got 'sigmiod'"):
    losses.three_tower_loss(i, t, t, SCALE, options=LossOptions("sigmiod"))


def test_non_finite_embeddings_give_a_non_finite_loss():
  """Documented behaviour: NaN is never masked; the loss (and its gradient) is NaN, which the
  training loop detects."""
  i, t = (jnp.asarray(x, jnp.float32) for x in _embeddings(2))
  assert np.isnan(float(losses.clip_loss(i.at[3, 0].set(jnp.nan), t, SCALE)))
  tiled = LossOptions(block_size=4)
  assert np.isnan(float(losses.clip_loss(i, t.at[0, 0].set(jnp.inf), SCALE, options=tiled)))


def test_draft_mmd_at_65536_counts_every_entry(mesh):
  """At B = 65,536 the MMD's entry count 2·B² = 8.6e9 is past int32. With a tiny embedding
  dim, σ₀ (which divides by that count) and the subsample MMD² computed on the 8-device mesh
  equal a float64 computation; the whole DRAFT loss and its gradient (tiled, 512 dims) also
  lower at this size with abstract inputs, tracing every count of the rff path.

  Rows are drawn from 8 unit vectors per tower, so the float64 reference sums the 64 distinct
  similarity values with their multiplicities instead of 4.3e9 entries (exact in float64)."""
  n, dim, scale = 65536, 4, 10.0
  rng = np.random.default_rng(0)
  protos = {k: unit(rng, 8, dim) for k in ("image", "caption", "dialogue")}
  which = {k: rng.integers(0, 8, n) for k in protos}
  emb = {k: protos[k][which[k]] for k in protos}
  counts = {k: np.bincount(which[k], minlength=8).astype(np.float64) for k in protos}
  key = jax.random.key(1)
  config = MMDConfig("subsample", subsample_size=512)
  f = jax.jit(on_mesh(lambda y, z, i, axis_name: mmd2(
      y, z, i, scale, key=key, config=config, axis_name=axis_name), mesh))
  value, sigmas = f(*(jnp.asarray(emb[k], jnp.float32) for k in ("caption", "dialogue", "image")))

  weights, values = [], []  # the distinct entries of S and D and how often each occurs
  for query in ("caption", "dialogue"):
    v = scale * protos[query] @ protos["image"].T  # [8, 8]
    weights.append(np.outer(counts[query], counts["image"]).ravel())
    values.append(v.ravel())
  weights, values = np.concatenate(weights), np.concatenate(values)
  assert weights.sum() == 2 * n * n  # 8.6e9 entries, exactly representable in float64
  mean = np.sum(weights * values) / weights.sum()
  sigma = np.sqrt(np.sum(weights * (values - mean) ** 2) / weights.sum())
  np.testing.assert_allclose(float(sigmas[0]), sigma, rtol=1e-5)

  positions = np.asarray(subsample_positions(key, 512, n))
  s = scale * np.sum(emb["caption"][positions[0, 0]] * emb["image"][positions[0, 1]], -1)
  d = scale * np.sum(emb["dialogue"][positions[1, 0]] * emb["image"][positions[1, 1]], -1)
  m = len(s)
  off = 1 - np.eye(m)
  kern = lambda u, v: ref.rbf(u, v, [sigma])
  expected = ((kern(s, s) * off).sum() / (m * (m - 1)) + (kern(d, d) * off).sum() / (m * (m - 1))
              - 2 * kern(s, d).mean())
  np.testing.assert_allclose(float(value), expected, rtol=1e-4, atol=1e-6)

  abstract = jax.ShapeDtypeStruct((n, 512), jnp.float32)
  loss = on_mesh(lambda i, y, z, s, key, axis_name: losses.draft_loss(
      i, y, z, s, key=key, options=LossOptions(block_size=1024), axis_name=axis_name)[0], mesh)
  jax.jit(jax.value_and_grad(loss, argnums=(1, 2))).lower(
      abstract, abstract, abstract, jax.ShapeDtypeStruct((), jnp.float32), jax.random.key(0))


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_batches_of_varying_size_through_one_jitted_loss(mesh, name):
  """NaFlex steps change the global batch with the sequence length (token budget / length):
  one jitted loss on the mesh takes each size, equal in value and gradient to the dense float64
  loss of that size, and compiles once per size."""
  fn, np_fn = {"clip": (losses.clip_loss, ref.clip),
               "siglip": (lambda i, t, s, axis_name: losses.siglip_loss(
                   i, t, s, jnp.float32(-3.0), axis_name=axis_name),
                          lambda i, t, s: ref.sigmoid_loss(i, t, s, -3.0))}[name]
  on = on_mesh(fn, mesh)
  step = jax.jit(jax.value_and_grad(lambda i, t, s: on(i, t, s), argnums=(0, 1, 2)))
  for b in (8, 40, 16, 40):
    i, t = _embeddings(2, seed=b, b=b)
    value, grads = step(jnp.asarray(i, jnp.float32), jnp.asarray(t, jnp.float32),
                        jnp.float32(SCALE))
    assert rel_err(value, np_fn(i, t, SCALE)) < VALUE_TOL, b
    for g, n in zip(grads, ref.numeric_grad(np_fn, [i, t, SCALE])):
      assert rel_err(g, n) < GRAD_TOL, b
  assert step._cache_size() == 3  # one program per batch size, reused when a size recurs
