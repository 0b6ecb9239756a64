"""LoRA (lora.rank > 0) with every method that adapts pretrained towers, and under FSDP,
GradCache and bfloat16: the pretrained towers stay bitwise, only adapters move, and a step's
adapter update equals the plain float32 single-device one (SGD, so the update is the gradient
itself; tolerances below)."""
import jax
import numpy as np
import pytest
from method_runs import fit, load_config

import clipjax
from clipjax.methods import get_method
from clipjax.methods.three_tower import init_dialogue_params
from clipjax.train.loop import train

SIGLIP_ARCH = "ViT-T-16-SigLIP2-test"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
  """Randomly initialised CLIP and SigLIP checkpoints: what the adapting methods start from."""
  out = {}
  for arch in ("ViT-T-16-test", SIGLIP_ARCH):
    path = tmp_path_factory.mktemp("base") / f"{arch}.safetensors"
    clipjax.export_openclip(clipjax.create_model(arch, seed=3)[1], arch, path)
    out[arch] = str(path)
  return out


def _lora_config(name, **overrides):
  cfg = load_config(name, **{"total_steps": 2, "batch_size": 32, "lora.rank": 2,
                             "lora.alpha": 4.0, "optim.lr": 1e-2, "optim.warmup_steps": 0,
                             **overrides})
  if name == "multitask":
    cfg.data.text_batch_size = 32
    cfg.data.text = cfg.data.train
  return cfg


@pytest.mark.parametrize("name", ["lit", "draft", "three_tower", "siglip", "multitask"])  # clip:
# test_lora.py and the layouts below
def test_every_method_trains_only_the_adapters(name, bases, tmp_path):
  arch = SIGLIP_ARCH if name == "siglip" else "ViT-T-16-test"
  cfg = _lora_config(name, **{"model.arch": arch, "model.checkpoint": bases[arch]})
  result = fit(cfg, tmp_path)
  params = result["params"]
  base = {"clip": clipjax.load_openclip(bases[arch], arch=arch)[1]}
  towers = get_method(name).lora_towers
  if "dialogue" in towers:
    base["dialogue"] = init_dialogue_params(base["clip"])
  for tower in towers:
    for got, want in zip(jax.tree.leaves(params[tower]), jax.tree.leaves(base[tower])):
      np.testing.assert_array_equal(got, np.asarray(want))  # the pretrained weights: bitwise
  adapters = params["lora"]
  frozen = tuple(cfg.freeze)  # the method's rules: their kernels get no adapter
  assert adapters and all(np.abs(v["b"]).max() > 0 for v in adapters.values())
  if name in ("lit", "draft"):
    assert not any(k.startswith("clip.visual.") for k in adapters), frozen
  if name == "three_tower":
    assert {k.split(".")[0] for k in adapters} == {"dialogue"}, frozen


def _adapter_update(cfg, workdir, devices=None):
  result = train(cfg, str(workdir), devices=devices)
  return np.concatenate([np.asarray(v["b"], np.float64).ravel()
                         for _, v in sorted(result["params"]["lora"].items())])


def test_adapters_under_fsdp_gradcache_and_bfloat16(tmp_path):
  """One SGD step (B starts at zero, so B after it = −lr · its gradient) of each layout against
  one float32 device: FSDP over 2 × 4 devices and GradCache sub-batches change only the
  summation order (relative 1e-4); bfloat16 compute rounds activations (relative 5e-2)."""
  def cfg(**overrides):
    return _lora_config("clip", **{"total_steps": 1, "optim.name": "sgd", "optim.b1": 0.0,
                                   "optim.lr": 1.0, "optim.weight_decay": 0.0, **overrides})
  want = _adapter_update(cfg(), tmp_path / "plain", jax.devices()[:1])
  assert np.abs(want).max() > 0
  variants = {
      "fsdp": (cfg(**{"mesh.data": 4, "mesh.fsdp": 2, "mesh.fsdp_min_size": 0}), None, 1e-4),
      "gradcache": (cfg(**{"optim.accum_steps": 4}), jax.devices()[:1], 1e-4),
      "bfloat16": (cfg(**{"model.dtype": "bfloat16"}), jax.devices()[:1], 5e-2),
  }
  for label, (c, devices, rtol) in variants.items():
    got = _adapter_update(c, tmp_path / label, devices)
    error = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert error < rtol, (label, error)
    if label == "bfloat16":
      assert error > 1e-5, error  # bfloat16 compute did run
