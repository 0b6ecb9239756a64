"""LoRA adapters (clipjax/models/lora.py): the merged weights against a float64 NumPy
W + scale · A B per q / k / v slice, in both block layouts; training moves the adapters only;
the exported model carries them merged."""
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

import clipjax
from clipjax.methods import method_config
from clipjax.models.lora import init_lora, merge_lora
from clipjax.models.naming import flatten


def _randomised(adapters, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), adapters)


@pytest.mark.parametrize("scan", [False, True])
def test_merge_equals_float64_low_rank_update(scan):
  _, clip = clipjax.create_model("ViT-T-16-test", scan_layers=scan)
  params = {"clip": jax.tree.map(np.asarray, clip)}
  adapters = _randomised(init_lora(params, rank=2))
  # q/k/v/out and MLP kernels of both towers, one adapter per fused q/k/v slice
  kinds = {k.rsplit(".", 2)[-2] for k in adapters}
  assert kinds == {"in_proj", "out_proj", "c_fc", "c_proj"}
  assert all(v["a"].shape[-3] == (3 if ".in_proj." in k else 1) for k, v in adapters.items())
  merged = flatten(merge_lora(params, adapters, scale=8.0))
  for path, w in flatten(params).items():
    adapter = adapters.get(".".join(path))
    if adapter is None:
      np.testing.assert_array_equal(merged[path], w)
      continue
    a, b = (np.asarray(adapter[x], np.float64) for x in ("a", "b"))
    delta = np.concatenate([a[..., s, :, :] @ b[..., s, :, :] for s in range(a.shape[-3])],
                           axis=-1)
    np.testing.assert_allclose(merged[path], w + 8.0 * delta, rtol=1e-5, atol=1e-5)
  if scan:  # one stacked adapter per kernel name, its layer axis first
    _, unrolled = clipjax.create_model("ViT-T-16-test")
    assert len(init_lora({"clip": unrolled}, rank=2)) == 2 * len(adapters)  # 2 layers a tower
    assert all(v["a"].shape[0] == 2 for v in adapters.values())


def _config(steps=3):
  c = method_config("clip")
  c.model.arch = "ViT-T-16-test"
  c.data.train = dict(kind="synthetic", size=256, resolution=32, seed=0, split="train")
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.log_every = 32, steps, 1
  c.checkpoint.every, c.eval = 0, None
  c.export.hf = False
  c.lora.rank, c.lora.alpha = 2, 4.0
  c.optim.lr = 1e-2
  return c


def test_only_adapters_train_and_the_export_carries_them_merged(tmp_path):
  from clipjax.main import run
  from clipjax.methods.base import with_lora_merged
  from clipjax.train.loop import train
  cfg = _config()
  result = train(cfg, str(tmp_path / "a"))
  _, base = clipjax.create_model("ViT-T-16-test", seed=cfg.seed)
  for got, want in zip(jax.tree.leaves(result["params"]["clip"]), jax.tree.leaves(base)):
    np.testing.assert_array_equal(got, np.asarray(want))  # the base stays bitwise
  assert all(np.abs(v["b"]).max() > 0 for v in result["params"]["lora"].values())
  merged = with_lora_merged(result["params"], cfg.lora)
  assert set(merged) == {"clip"}
  run(cfg, str(tmp_path / "b"))  # the same run through main: export of the merged weights
  exported = load_file(str(tmp_path / "b/export/open_clip_model.safetensors"))
  from clipjax.convert.openclip import params_to_state_dict
  ours = params_to_state_dict(jax.tree.map(np.asarray, merged["clip"]))
  for k, v in exported.items():
    np.testing.assert_array_equal(v, ours[k], err_msg=k)
  assert not np.array_equal(exported["visual.transformer.resblocks.0.mlp.c_fc.weight"],
                            params_to_state_dict(jax.tree.map(np.asarray, base))[
                                "visual.transformer.resblocks.0.mlp.c_fc.weight"])


def test_lora_config_errors():
  from clipjax.errors import ConfigError
  from clipjax.train.validate import validate
  cfg = _config()
  cfg.lora.targets = ("nothing_like_this",)
  with pytest.raises(ConfigError, match="match no kernel outside the freeze rules"):
    validate(cfg)
  cfg = _config()
  cfg.freeze = ("^clip/",)
  with pytest.raises(ConfigError, match="match no kernel"):
    validate(cfg)
