"""Model FLOPs from the shapes (clipjax/train/flops.py) against XLA's cost analysis of the
same computation (within 5 %: XLA also counts LayerNorms, activations, softmax and the loss,
which the model-FLOPs convention leaves out) and the peak FLOP/s table. MFU in the logs:
tests/train/test_main.py (metrics.jsonl and TensorBoard of a CLI run)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.methods import get_method, method_config, run_options
from clipjax.models import CLIP, get_model_config
from clipjax.parallel.mesh import make_mesh
from clipjax.train import flops
from clipjax.options import OptimOptions
from clipjax.train.optim import make_optimizer

TOL = 0.05
# Wide enough that matmuls dominate as in real towers (width 256, MLP 1024).
VIT = get_model_config("ViT-T-16-test").replace(
    embed_dim=128, vision={"width": 256, "image_size": 64}, text={"width": 256, "heads": 4})
SIGLIP = get_model_config("ViT-T-16-SigLIP2-test").replace(
    embed_dim=256, vision={"width": 256, "heads": 4, "image_size": 64},
    text={"width": 256, "heads": 4})


def _xla(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def _params(model):
  size, length = model.cfg.vision.image_size, model.cfg.text.context_length
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)),
                        jnp.zeros((1, length), jnp.int32))


@pytest.mark.parametrize("cfg", [VIT, SIGLIP], ids=["vit", "siglip"])
def test_tower_forward_flops_match_xla(cfg):
  model = CLIP(cfg)
  params = _params(model)
  n, size = 4, cfg.vision.image_size
  images = jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32)
  theirs = _xla(lambda p, x: model.apply(p, x, method=model.encode_image), params, images)
  ours = n * flops.tower_forward_flops(model, "image")
  assert abs(ours / theirs - 1) < TOL, (ours, theirs)
  length = cfg.text.context_length
  ids = jax.ShapeDtypeStruct((n, length), jnp.int32)
  theirs = _xla(lambda p, t: model.apply(p, t, method=model.encode_text), params, ids)
  ours = n * flops.tower_forward_flops(model, "text", length)
  assert abs(ours / theirs - 1) < TOL, (ours, theirs)


@pytest.mark.parametrize("name", ["clip", "draft", "three_tower"])
def test_step_flops_match_xla(name):
  """The whole train objective, forward and backward, differentiated w.r.t. the trainable
  leaves only: both towers trained (clip), a frozen image tower (draft), frozen image and
  text towers with a trained dialogue tower (three_tower)."""
  model = CLIP(VIT)
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _params(model))["params"]
  method = get_method(name)
  params = {"clip": params, **method.init_params(model, params, None)}
  freeze = {"clip": (), "draft": ("^clip/visual/", "^clip/logit_scale$"),
            "three_tower": ("^clip/",)}[name]
  _, frozen = make_optimizer(params, OptimOptions(), 1, freeze)
  n = 8
  batch = {"image": np.zeros((n, 64, 64, 3), np.uint8), "caption": np.ones((n, 16), np.int32),
           "dialogue": np.ones((n, 24), np.int32), "image_id": np.arange(n)}
  objective = method.objective(model, make_mesh(devices=jax.devices()[:1]),
                               run_options(method_config(name)))

  def loss(trainable, rest, batch, key):
    merged = jax.tree.map(lambda f, t, r: r if f else t, frozen, trainable, rest)
    return objective.loss_fn(merged, batch, key)[0]

  theirs = _xla(jax.value_and_grad(loss), params, params, batch, jax.random.key(0))
  ours = flops.step_flops(model, batch, method.text_towers(), flops.trainable_towers(frozen))
  assert flops.trainable_towers(frozen)["image"] == (name == "clip")
  assert abs(ours / theirs - 1) < TOL, (name, ours, theirs)


class _Device:  # what peak_flops reads of a jax.Device
  def __init__(self, kind):
    self.device_kind = kind


@pytest.mark.parametrize("kind, want", [("TPU v4", 275e12), ("TPU v5 lite", 197e12),
                                        ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("NVIDIA H100 80GB HBM3", 989e12),
                                        ("NVIDIA H200", 989e12)])
def test_peak_flops_table(kind, want):
  peak, source = flops.peak_flops(_Device(kind))
  assert peak == want and "data sheet" in source


def test_peak_flops_of_this_cpu_is_measured():
  peak, source = flops.peak_flops()
  assert 1e8 < peak < 1e14 and "measured float32 matmul" in source


# Host round trips inside a compiled step: callbacks, infeed / outfeed, send / recv.
HOST_OPS = re.compile(r"callback|infeed|outfeed|\bsend\(|\brecv\(|custom_call_target=\"[^\"]*host")


@pytest.mark.parametrize("name", ["clip", "draft"])
def test_compiled_train_step_is_the_model_flops_in_one_program(name):
  """Regression guard, machine-independent: the compiled train step (objective, backward,
  AdamW, everything `train()` runs per step) costs within 10 % of the model FLOPs counted
  from the shapes, so no feature silently adds work to the step (e.g. a tower run twice, a
  gradient of a frozen tower), and it is one XLA program with no host round trip inside."""
  from clipjax.train.step import make_train_step
  model = CLIP(VIT)
  params = {"clip": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _params(model))["params"]}
  cfg, method, mesh = method_config(name), get_method(name), make_mesh(devices=jax.devices()[:1])
  tx, frozen = make_optimizer(params, OptimOptions(lr=1e-3, grad_clip_norm=0.0), 10,
                              tuple(cfg.freeze))
  n = 64  # matmul work well above AdamW's per-parameter arithmetic, as in real steps
  batch = {"image": np.zeros((n, 64, 64, 3), np.uint8), "caption": np.ones((n, 24), np.int32),
           "dialogue": np.ones((n, 24), np.int32), "image_id": np.arange(n)}
  if name == "clip":
    del batch["dialogue"]
  step = make_train_step(method.objective(model, mesh, run_options(cfg)), tx, frozen, mesh,
                         clamp_scale=name == "clip")
  state = {"params": params, "opt_state": jax.eval_shape(tx.init, params), "step": np.int32(0),
           "rng": jax.random.key_data(jax.random.key(0))}
  compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  theirs = float((cost[0] if isinstance(cost, list) else cost)["flops"])
  ours = flops.step_flops(model, batch, method.text_towers(), flops.trainable_towers(frozen))
  assert abs(theirs / ours - 1) < 0.10, (name, ours, theirs)
  assert not HOST_OPS.search(compiled.as_text())
