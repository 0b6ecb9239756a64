"""The training step on 8 simulated devices: GradCache accumulation gives the un-accumulated
gradient (every negative kept) with less activation memory; the step on an 8-device mesh equals
the step on 1 device."""
import jax
import numpy as np
import pytest
from conftest import FLOAT32_ROUNDING, rel_err
from jax.sharding import PartitionSpec as P

import clipjax
from clipjax.data.synthetic import SyntheticScenes
from clipjax.methods import get_method, method_config, run_options
from clipjax.models.naming import flatten
from clipjax.models.stacking import is_stacked, rule_names, stack_layers, unstack_layers
from clipjax.parallel.hlo_stats import collective_bytes
from clipjax.parallel.mesh import host_batch_to_global, make_mesh, replicated
from clipjax.text.tokenizer import Tokenizer
from clipjax.options import OptimOptions
from clipjax.train.optim import frozen_mask, make_optimizer
from clipjax.train.step import make_grad_fn, make_train_step, merge_rows, split_rows

ARCH = "ViT-T-16-test"
N = 32

ONE_WARMUP_STEP = OptimOptions(lr=1e-3, warmup_steps=1, grad_clip_norm=0.0)


@pytest.fixture(scope="module")
def scenes():
  source = SyntheticScenes(N, resolution=32)
  return [source[i] for i in range(N)]


def image_text_batch(scenes, dialogue=False):
  tok = Tokenizer()
  batch = {"image": np.stack([s["image"] for s in scenes]).astype(np.uint8),
           "caption": tok([s["caption"] for s in scenes])[:, :24],
           "image_id": np.arange(len(scenes)), "label": np.asarray([s["label"] for s in scenes])}
  if dialogue:
    batch["dialogue"] = tok([f"Q: {q} A: {a}" for s in scenes for q, a in s["dialogue"][:1]])[:, :24]
  return batch


def multitask_batch(scenes):
  tok = Tokenizer()
  text = {"query": tok([s["caption"] for s in scenes])[:, :24],
          "positive": tok([s["paraphrase"] for s in scenes])[:, :24],
          "negatives": tok([s["hard_negative"] for s in scenes])[:, None, :24]}
  return {"text": text, "image_text": image_text_batch(scenes[:16])}


def test_split_and_merge_rows_round_trip():
  mesh = make_mesh()
  x = host_batch_to_global({"a": np.arange(64 * 3).reshape(64, 3)}, mesh)
  chunks = jax.jit(lambda t: split_rows(t, 4, mesh))(x)
  assert chunks["a"].shape == (4, 16, 3)
  # sub-batch j holds the j-th two rows of each device's 8
  np.testing.assert_array_equal(np.asarray(chunks["a"])[1, :2, 0], [6, 9])
  back = jax.jit(lambda t: merge_rows(t, mesh))(chunks)
  np.testing.assert_array_equal(np.asarray(back["a"]), np.asarray(x["a"]))
  with pytest.raises(ValueError, match="does not split into 3 sub-batches"):
    split_rows(x, 3, mesh)


@pytest.mark.parametrize("name,freeze", [
    ("clip", ()),
    ("draft", ("^clip/visual/", "^clip/logit_scale$")),
    ("multitask", ()),
])
def test_gradcache_equals_full_batch_gradient(scenes, name, freeze):
  model, clip = clipjax.create_model(ARCH)
  params = {"clip": clip}
  cfg = method_config(name)
  mesh = make_mesh()
  method = get_method(name).objective(model, mesh, run_options(cfg))
  _, frozen = make_optimizer(params, OptimOptions(), 10, freeze)
  host = multitask_batch(scenes) if name == "multitask" else image_text_batch(scenes, True)
  batch = host_batch_to_global(host, mesh)
  params = jax.device_put(params, replicated(mesh))
  key = jax.random.key(3)
  full = jax.jit(make_grad_fn(method, frozen, mesh, 1))(params, batch, key)
  accumulated = jax.jit(make_grad_fn(method, frozen, mesh, 2))(params, batch, key)
  # same loss (all negatives kept), same gradient up to float32 summation order
  np.testing.assert_allclose(float(accumulated[0]), float(full[0]), rtol=1e-6)
  for g_acc, g_full in zip(accumulated[2], full[2]):
    scale = float(np.abs(np.asarray(g_full)).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(g_acc), np.asarray(g_full), rtol=1e-4,
                               atol=1e-5 * scale)


def test_gradcache_needs_less_activation_memory(scenes):
  model, clip = clipjax.create_model(ARCH)
  params = {"clip": clip}
  mesh = make_mesh()
  method = get_method("clip").objective(model, mesh, run_options(method_config("clip")))
  _, frozen = make_optimizer(params, OptimOptions(), 10)
  # 512 rows: enough that activations, not the (carried) gradients, dominate the temporaries
  batch = host_batch_to_global(image_text_batch(scenes * 16), mesh)
  params = jax.device_put(params, replicated(mesh))
  temp = {}
  for k in (1, 4):
    fn = jax.jit(make_grad_fn(method, frozen, mesh, k))
    temp[k] = fn.lower(params, batch, jax.random.key(0)).compile().memory_analysis(
        ).temp_size_in_bytes
  assert temp[4] < 0.75 * temp[1], temp  # compiled temporaries (42 vs 27 MB), not a timing


def test_gradcache_reduces_the_gradient_once(scenes):
  """With 4 sub-batches the compiled step all-reduces the gradient once, as without GradCache
  (each device sums its rows' partial gradients first), not once per sub-batch."""
  model, clip = clipjax.create_model(ARCH)
  params = jax.device_put({"clip": clip}, replicated(mesh := make_mesh()))
  method = get_method("clip").objective(model, mesh, run_options(method_config("clip")))
  _, frozen = make_optimizer(params, OptimOptions(), 10)
  batch = host_batch_to_global(image_text_batch(scenes), mesh)
  weights = sum(x.size * 4 for x in jax.tree.leaves(clip))
  reduced = {}
  for k in (1, 4):
    hlo = jax.jit(make_grad_fn(method, frozen, mesh, k)).lower(
        params, batch, jax.random.key(0)).compile().as_text()
    reduced[k] = collective_bytes(hlo)["all-reduce"]
  # about the weights once (the unused text positions beyond the 24 tokens need no reduction)
  assert 0.99 * weights <= reduced[1] < 1.01 * weights, (reduced, weights)
  assert 0.99 * weights <= reduced[4] < 1.01 * weights, (reduced, weights)  # was 4x


def test_draft_reduces_its_two_text_streams_gradient_once(scenes):
  """DRAFT's captions and dialogues share the text tower: the plain step (no GradCache) encodes
  both in one pass, so the compiled step all-reduces the text tower's gradient once, not once
  per stream (it was 2x), with the embeddings of two separate passes (float32 round-off)."""
  from clipjax.methods.context import Context, encode_text
  from clipjax.train.optim import is_frozen
  model, clip = clipjax.create_model(ARCH)
  params = jax.device_put({"clip": clip}, replicated(mesh := make_mesh()))
  cfg = method_config("draft")
  method = get_method("draft")
  _, frozen = make_optimizer(params, OptimOptions(), 10, tuple(cfg.freeze))
  trained = sum(x.size * 4 for x, f in zip(jax.tree.leaves(clip), jax.tree.leaves(frozen))
                if not is_frozen(f))
  batch = host_batch_to_global(image_text_batch(scenes, True), mesh)
  objective = method.objective(model, mesh, run_options(cfg))
  hlo = jax.jit(make_grad_fn(objective, frozen, mesh)).lower(
      params, batch, jax.random.key(0)).compile().as_text()
  reduced = collective_bytes(hlo)["all-reduce"]
  assert 0.99 * trained <= reduced < 1.01 * trained, (reduced, trained)
  ctx = Context(model, mesh, run_options(cfg).settings)
  together = method.embed(ctx, params, batch)
  for field in ("caption", "dialogue"):
    separate = encode_text(ctx, params, batch[field])
    assert rel_err(together[field], separate) < FLOAT32_ROUNDING, field


def test_eight_devices_equal_one_device(scenes):
  """3 steps of DRAFT on an 8-device mesh == 3 steps on 1 device (rtol 1e-5)."""
  model, clip = clipjax.create_model(ARCH)
  clip = jax.tree.map(np.asarray, clip)  # host copies: the step donates its device state
  freeze = ("^clip/visual/", "^clip/logit_scale$")
  cfg = method_config("draft")
  host = image_text_batch(scenes, True)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = make_mesh(devices=devices)
    params = {"clip": clip}
    tx, frozen = make_optimizer(params, ONE_WARMUP_STEP, 10, freeze)
    state = {"params": params, "opt_state": tx.init(params), "step": np.int32(0),
             "rng": jax.random.key_data(jax.random.key(0))}
    state = jax.device_put(state, replicated(mesh))
    objective = get_method("draft").objective(model, mesh, run_options(cfg))
    step = make_train_step(objective, tx, frozen, mesh, clamp_scale=False)
    losses = []
    for i in range(3):
      rows = np.roll(np.arange(N), 5 * i)
      state, metrics = step(state, host_batch_to_global({k: v[rows] for k, v in host.items()},
                                                        mesh))
      losses.append(float(metrics["loss"]))
    results.append((losses, jax.tree.map(np.asarray, state["params"])))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
  # Parameters: rtol 1e-5, plus atol 1e-4 (10 % of one step's lr): Adam divides by
  # sqrt(v) + eps, so an element whose gradient is a float32 cancellation of many terms (a
  # frequent token's embedding column; the order of the sums differs across meshes) can carry
  # a relative error of a few % into its update on either mesh. A wrong reduction (a missing
  # or doubled psum) moves every trained element by up to 3 lr = 3e-3, and the losses above.
  for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[0][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_fsdp_shards_parameters_and_trains_like_data_parallel(tmp_path):
  """mesh.fsdp=2: big leaves (and their Adam moments) are split over the fsdp axis, and the
  run's loss curve equals the data-parallel one (rtol 1e-5)."""
  import json

  from clipjax.parallel.sharding import param_shardings
  from clipjax.train.loop import train
  _, clip = clipjax.create_model(ARCH)
  mesh = make_mesh(data=4, fsdp=2)
  specs = param_shardings({"clip": clip}, mesh, min_size=4096)
  assert specs["clip"]["token_embedding"]["embedding"].spec == P("fsdp", None)  # [49408, 64]
  assert specs["clip"]["logit_scale"].spec == P()
  curves = {}
  # (fsdp, scanned blocks with dots_saveable remat): the scanned layout trains the same curve
  for fsdp, scan in ((1, False), (2, False), (2, True)):
    cfg = method_config("clip")
    cfg.model.arch = ARCH
    cfg.data.train = dict(kind="synthetic", size=256, resolution=32, seed=0, split="train")
    cfg.data.num_workers = 0
    cfg.batch_size, cfg.total_steps, cfg.log_every = 32, 3, 1
    cfg.checkpoint.every, cfg.eval = 0, None
    cfg.mesh.fsdp, cfg.mesh.fsdp_min_size = fsdp, 4096
    cfg.model.scan_layers, cfg.model.remat, cfg.model.remat_policy = scan, scan, "dots_saveable"
    workdir = tmp_path / f"{fsdp}{scan}"
    result = train(cfg, str(workdir))
    curves[fsdp, scan] = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").open()]
    assert result["params"]["clip"]["token_embedding"]["embedding"].shape == (49408, 64)
    assert is_stacked(result["params"]) == scan
  np.testing.assert_allclose(curves[2, False], curves[1, False], rtol=1e-5)
  np.testing.assert_allclose(curves[2, True], curves[1, False], rtol=1e-5)


def test_scanned_step_equals_unrolled_with_a_partly_frozen_stack(scenes):
  """Two CLIP steps with the first visual block frozen: the scanned layout (a stack whose layer
  0 is frozen) ends where the per-block layout does, and the frozen layer is bitwise kept.
  Weight decay and FSDP sharding read the same per-block rules in both layouts."""
  from clipjax.parallel.sharding import param_shardings
  from clipjax.train.optim import decay_mask
  model, clip = clipjax.create_model(ARCH)
  scanned, init = clipjax.create_model(ARCH, scan_layers=True)
  stacked = stack_layers(jax.tree.map(np.asarray, clip), init)
  freeze = ("^clip/visual/transformer/resblocks_0/", "^clip/logit_scale$")
  host = image_text_batch(scenes)
  mesh = make_mesh()
  results = []
  for m, p in ((model, clip), (scanned, stacked)):
    params = {"clip": jax.tree.map(np.asarray, p)}
    tx, frozen = make_optimizer(params, ONE_WARMUP_STEP, 10, freeze)
    state = jax.device_put({"params": params, "opt_state": tx.init(params), "step": np.int32(0),
                            "rng": jax.random.key_data(jax.random.key(0))}, replicated(mesh))
    objective = get_method("clip").objective(m, mesh, run_options(method_config("clip")))
    step = make_train_step(objective, tx, frozen, mesh, clamp_scale=False)
    for _ in range(2):
      state, _ = step(state, host_batch_to_global(host, mesh))
    results.append(unstack_layers(jax.tree.map(np.asarray, state["params"])))
  mask = frozen_mask({"clip": stacked}, freeze)["clip"]["visual"]["transformer"]["resblocks"]
  assert mask["ln_1"]["scale"].tolist() == [True, False]  # layer 0 of 2 frozen
  block0 = lambda r: r["clip"]["visual"]["transformer"]["resblocks_0"]
  for a, b, before in zip(jax.tree.leaves(block0(results[1])), jax.tree.leaves(block0(results[0])),
                          jax.tree.leaves(block0({"clip": clip}))):
    assert np.array_equal(a, before) and np.array_equal(b, before)
  # same tolerances as the 8-vs-1-device comparison above (float32 summation order, Adam eps)
  for a, b in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)
  # weight decay: per-block decision equal in both layouts
  decays = lambda tree: {k[:1] + tuple(s for s in k[1:] if not s.startswith("resblocks")): v
                         for k, v in flatten(decay_mask(tree)).items()}
  assert decays(stacked) == decays(jax.tree.map(np.asarray, clip))
  # FSDP: a stacked leaf is split like its per-block leaves, never on the layer axis
  fsdp_mesh = make_mesh(data=4, fsdp=2)
  specs = flatten(param_shardings(stacked, fsdp_mesh, min_size=1024, names=rule_names(stacked)))
  unrolled = flatten(param_shardings(clip, fsdp_mesh, min_size=1024, names=rule_names(clip)))
  key = ("visual", "transformer", "resblocks", "mlp", "c_fc", "kernel")
  assert specs[key].spec == P(None, *unrolled[key[:2] + ("resblocks_1",) + key[3:]].spec)
  assert specs[key].spec[1:] != (None, None)
