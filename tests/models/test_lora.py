"""LoRA adapters (clipjax/models/lora.py): the merged weights against a float64 NumPy
W + scale · A B per q / k / v slice, in both block layouts; training moves the adapters only;
the exported model carries them merged."""
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file
from conftest import FLOAT32_ROUNDING, rel_err

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


@pytest.mark.parametrize("scan", [False, True])
def test_adapters_beside_the_kernels_equal_the_merged_weights(scan):
  """Training applies x W + s (x A) B in each adapted Dense (models/lora.py); without dropout,
  or in evaluation (no step key), it equals the merged weights (float32 round-off)."""
  import dataclasses
  from clipjax.methods.context import Context, LoraSettings, embed_image_text
  model, clip = clipjax.create_model("ViT-T-16-test", scan_layers=scan)
  params = {"clip": jax.tree.map(np.asarray, clip)}
  adapters = jax.tree.map(lambda x: 0.05 * x, _randomised(init_lora(params, rank=2)))
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (4, 32, 32, 3), np.uint8),
           "caption": rng.integers(1, 400, (4, 77)).astype(np.int32)}
  ctx = Context(model, None, None, lora=LoraSettings(2.0, 0.25))
  want = embed_image_text(dataclasses.replace(ctx, lora=None),
                          merge_lora(params, adapters, 2.0), batch)
  base = embed_image_text(dataclasses.replace(ctx, lora=None), params, batch)
  for settings, key, same in ((LoraSettings(2.0), jax.random.key(0), True),
                              (LoraSettings(2.0, 0.25), None, True),  # evaluation: no dropout
                              (LoraSettings(2.0, 0.25), jax.random.key(0), False)):
    got = embed_image_text(dataclasses.replace(ctx, lora=settings, key=key),
                           {**params, "lora": adapters}, batch)
    for name in ("image", "caption"):
      assert np.abs(np.asarray(want[name]) - np.asarray(base[name])).max() > 1e-3
      if same:
        assert rel_err(got[name], want[name]) < FLOAT32_ROUNDING, name
      else:
        assert np.abs(np.asarray(got[name]) - np.asarray(want[name])).max() > 1e-4


def test_lora_dropout_drops_input_features_per_token_unbiased():
  """With A = B = identity the adapter's update is s · dropout(x): each feature of each token
  is 0 or x / (1 − p), zeroed at rate p, so its mean is x (binomial tolerance, 5 sigma)."""
  import flax.linen as nn
  from clipjax.models.lora import applying_lora
  n, width, p = 256, 16, 0.25
  dense = nn.Dense(width)
  x = np.ones((n, width), np.float32)
  weights = dense.init(jax.random.key(0), x)["params"]
  eye = np.eye(width, dtype=np.float32)[None]
  lora = {"a": eye, "b": eye}
  with applying_lora(scale=1.0, dropout=p):
    plain = dense.apply({"params": weights}, x)
    kept = dense.apply({"params": weights, "lora": lora}, x,
                       rngs={"lora_dropout": jax.random.key(1)}) - plain
    no_rng = dense.apply({"params": weights, "lora": lora}, x) - plain
  kept, no_rng = np.asarray(kept), np.asarray(no_rng)
  np.testing.assert_allclose(no_rng, x, rtol=1e-6)  # no rng: evaluation, nothing dropped
  assert np.all(np.isclose(kept, 0, atol=1e-6) | np.isclose(kept, 1 / (1 - p), rtol=1e-6))
  dropped = np.isclose(kept, 0, atol=1e-6).mean()
  assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / kept.size), dropped
  rows = np.isclose(kept, 0, atol=1e-6)
  assert len({r.tobytes() for r in rows}) > n // 2  # a mask per token, not one per batch


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


def _features(model_dir_or_model, pixels, ids):
  import torch
  import transformers
  model = (transformers.AutoModel.from_pretrained(model_dir_or_model)
           if isinstance(model_dir_or_model, str) else model_dir_or_model).eval()
  with torch.no_grad():
    out = [model.get_image_features(pixel_values=pixels), model.get_text_features(input_ids=ids)]
  return [getattr(x, "pooler_output", x).numpy() for x in out]


def test_adapters_train_alone_checkpoint_without_the_base_and_export_merged_and_as_peft(tmp_path):
  """One LoRA run through main (scanned blocks): the base stays bitwise and is left out of
  the checkpoints; the merged HF export equals PEFT's model of the base + the adapter folder;
  a resume from step 2 exports the same weights; a changed base is refused on resume."""
  import json

  import peft
  import torch
  import transformers
  from clipjax.convert.hf import state_dict_to_hf
  from clipjax.convert.io import CheckpointError
  from clipjax.convert.openclip import params_to_state_dict
  from clipjax.main import run
  from clipjax.train.loop import train
  cfg = _config(4)
  cfg.model.scan_layers, cfg.export.hf, cfg.checkpoint.every = True, True, 2
  cfg.lora.dropout = 0.1  # drawn from the step's key: the resume below stays bitwise
  run(cfg, str(tmp_path / "a"))
  export = tmp_path / "a/export"
  _, base = clipjax.create_model("ViT-T-16-test", seed=cfg.seed)
  base_hf = state_dict_to_hf(params_to_state_dict(jax.tree.map(np.asarray, base)))
  got = load_file(str(export / "hf_base/model.safetensors"))
  for k, v in base_hf.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)  # the base stays bitwise
  merged = load_file(str(export / "hf/model.safetensors"))
  assert not np.array_equal(merged["vision_model.encoder.layers.0.mlp.fc1.weight"],
                            base_hf["vision_model.encoder.layers.0.mlp.fc1.weight"])
  adapter_config = json.loads((export / "peft/adapter_config.json").read_text())
  assert adapter_config["lora_dropout"] == 0.1 and adapter_config["r"] == 2
  # PEFT's LoRA on the base export computes the merged export's features
  torch.manual_seed(0)
  pixels, ids = torch.randn(2, 3, 32, 32), torch.randint(1, 400, (2, 77))
  with_peft = peft.PeftModel.from_pretrained(
      transformers.AutoModel.from_pretrained(str(export / "hf_base")), str(export / "peft"))
  want = _features(str(export / "hf"), pixels, ids)
  for ours, theirs in zip(_features(with_peft, pixels, ids), want):
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)  # float32 round-off
  # checkpoints hold the adapters and name the base; a resume from step 2 continues exactly
  import ast
  import shutil
  saved = [ast.literal_eval(k) for k in json.loads(
      (tmp_path / "a/checkpoints/2/state/_METADATA").read_text())["tree_metadata"]]
  params = {p[1] for p in saved if p[0] == "params"}
  assert params == {"lora"}, params  # no CLIP weights in the checkpoint
  base_record = json.loads((tmp_path / "a/checkpoints/2/base/metadata").read_text())
  assert base_record["name"] == "ViT-T-16-test initialised with seed 0", base_record
  shutil.rmtree(tmp_path / "a/checkpoints/4")
  run(cfg, str(tmp_path / "a"))
  for k, v in load_file(str(export / "hf/model.safetensors")).items():
    np.testing.assert_array_equal(v, merged[k], err_msg=k)
  cfg.seed = 1  # another random base under the same work dir
  with pytest.raises(CheckpointError, match="holds adapters of base weights .* fingerprint"):
    train(cfg, str(tmp_path / "a"))


@pytest.mark.parametrize("arch", ["ViT-T-16-test", "ViT-T-16-SigLIP2-test"])
def test_peft_folder_equals_the_merged_weights(arch, tmp_path):
  """The PEFT folder of random adapters on both towers (CLIPModel / SiglipModel, incl. the
  MAP head's MLP) against the merged model's HF export, in torch."""
  import peft
  import torch
  import transformers
  from clipjax.convert.hf import export_hf
  from clipjax.convert.peft import export_peft
  model, clip = clipjax.create_model(arch)
  params = {"clip": jax.tree.map(np.asarray, clip)}
  adapters = jax.tree.map(lambda x: 0.05 * x, _randomised(init_lora(params, rank=2)))
  export_hf(params["clip"], model.cfg, tmp_path / "base")
  export_hf(merge_lora(params, adapters, 2.0)["clip"], model.cfg, tmp_path / "merged")
  export_peft(adapters, model.cfg, tmp_path / "peft", rank=2, alpha=4.0)
  torch.manual_seed(0)
  size, length = model.cfg.vision.image_size, model.cfg.text.context_length
  pixels, ids = torch.randn(2, 3, size, size), torch.randint(1, 250, (2, length))
  with_peft = peft.PeftModel.from_pretrained(
      transformers.AutoModel.from_pretrained(str(tmp_path / "base")), str(tmp_path / "peft"))
  base = _features(str(tmp_path / "base"), pixels, ids)
  for ours, theirs, before in zip(_features(with_peft, pixels, ids),
                                  _features(str(tmp_path / "merged"), pixels, ids), base):
    # x W + s (x A) B (PEFT) vs x (W + s A B) (merged): float32 rounding at the features' scale
    assert rel_err(ours, theirs) < FLOAT32_ROUNDING, rel_err(ours, theirs)
    assert rel_err(before, theirs) > 100 * FLOAT32_ROUNDING  # the adapters change the features


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
