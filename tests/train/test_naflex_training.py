"""SigLIP 2 NaFlex training: batches by sequence length under a token budget (real grain
pipelines with worker processes, on the vendored COCO photos), resume, GradCache, FSDP, the
frozen-tower cache per length, the adaptation methods in their sigmoid form, and the CLI
fine-tuning a transformers Siglip2Model folder that transformers then loads back."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from conftest import REPO, rel_err, tiny_siglip2_hf_config, xla_flags
from method_runs import load_config

import clipjax
from clipjax.data.batching import plan_lengths
from clipjax.data.manifest import ManifestSource
from clipjax.data.pipeline import PrepareExample, build_dataset
from clipjax.data.streams import Encoding
from clipjax.models import get_model_config
from clipjax.train.loop import train

transformers = pytest.importorskip("transformers")

ARCH = "ViT-T-16-SigLIP2-NaFlex-test"
COCO = REPO / "third_party/coco_sample/manifest.jsonl"


def _coco_pipeline(plan, num_workers, seed=0):
  encoding = Encoding.of(get_model_config(ARCH))
  prepare = PrepareExample(encoding.image_size, train=False, context_length=16,
                           preprocess=encoding.preprocess)
  return build_dataset(ManifestSource(str(COCO)), prepare, batch_size=0, seed=seed,
                       num_workers=num_workers, lengths=plan, process_index=0, process_count=1)


def _summary(batch):
  image = batch["image"]
  return (image["pixel_values"].shape, tuple(batch["image_id"]),
          image["spatial_shapes"].tolist())


def test_batches_follow_the_length_plan_in_workers_and_resume():
  plan = plan_lengths((8, 16), token_budget=48, local_devices=1, seed=3)
  assert plan.rows == (6, 3)  # 48 patches per device: 6 images of 8 patches or 3 of 16
  lengths = [plan.length_of(b) for b in range(8)]
  assert set(lengths) == {8, 16}  # both drawn within a few batches
  for workers in (0, 2):
    it = iter(_coco_pipeline(plan, workers))
    batches = [next(it) for _ in range(8)]
    for b, (batch, n) in enumerate(zip(batches, lengths)):
      image = batch["image"]
      assert image["pixel_values"].shape == (plan.rows_at(n), n, 16 * 16 * 3), (workers, b)
      assert image["pixel_values"].dtype == np.uint8  # normalised on the device
      assert (image["spatial_shapes"].prod(-1) <= n).all()
      assert (image["pixel_attention_mask"].sum(-1) == image["spatial_shapes"].prod(-1)).all()
      # COCO photos are landscape and portrait: NaFlex keeps their aspect
      assert len({tuple(s) for s in image["spatial_shapes"].tolist()}) >= 1
    assert not any(b["bad_records"].any() for b in batches)
    # a restored iterator continues the same batches (lengths and records)
    it = iter(_coco_pipeline(plan, workers))
    for _ in range(3):
      next(it)
    state = it.get_state()
    rest = [_summary(next(it)) for _ in range(3)]
    it.close() if hasattr(it, "close") else None
    again = iter(_coco_pipeline(plan, workers))
    again.set_state(state)
    assert [_summary(next(again)) for _ in range(3)] == rest


def test_a_budget_too_small_for_a_length_is_named():
  with pytest.raises(ValueError, match="holds no batch at length 64"):
    plan_lengths((16, 64), token_budget=32, local_devices=1)


def _naflex_config(method="siglip", **overrides):
  cfg = load_config(method, **{"model.arch": ARCH, "total_steps": 6, "batch_size": 16,
                               "log_every": 1, **overrides})
  cfg.data.train = dict(kind="synthetic", size=512, resolution=48, seed=0, split="train")
  cfg.data.naflex.lengths = (4, 16)
  return cfg


def _losses(workdir):
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_gradcache_and_fsdp_give_the_plain_runs_losses(tmp_path):
  """GradCache sub-batches (accum_steps=2) and an FSDP mesh change how a step is computed, not
  what: the loss curve equals the plain single-device run's, batch sizes varying by length."""
  plain = train(_naflex_config(), str(tmp_path / "plain"), devices=jax.devices()[:1])
  cfg = _naflex_config(**{"optim.accum_steps": 2})
  cfg.mesh.data, cfg.mesh.fsdp = 1, 2
  cfg.mesh.fsdp_min_size = 0
  split = train(cfg, str(tmp_path / "split"), devices=jax.devices()[:2])
  assert plain["steps_run"] == split["steps_run"] == 6
  np.testing.assert_allclose(_losses(tmp_path / "split"), _losses(tmp_path / "plain"),
                             rtol=2e-5)
  assert rel_err(split["params"]["clip"]["visual"]["trunk"]["embeds"]["pos_embed"],
                 plain["params"]["clip"]["visual"]["trunk"]["embeds"]["pos_embed"]) < 1e-4


@pytest.mark.parametrize("method", ["lit", "draft", "three_tower"])
def test_adaptation_methods_train_a_naflex_tower_with_the_frozen_cache(tmp_path, method):
  """LiT, DRAFT and CLIP-3Modal (sigmoid form) on a NaFlex image tower from its cache: one
  table per sequence length (an image's embedding depends on its length)."""
  overrides = {"data.cache_frozen": True, "freeze": ("^clip/visual/",)}
  if method in ("draft", "three_tower"):
    overrides[f"{method}.form"] = "sigmoid"
  cfg = _naflex_config(method, **overrides)
  cfg.model.checkpoint = ""
  result = train(cfg, str(tmp_path), devices=jax.devices()[:1])
  losses = _losses(tmp_path)
  assert len(losses) == 6 and all(np.isfinite(losses))
  tables = sorted(p.name for p in (tmp_path / "frozen_cache").iterdir() if "images" in p.name)
  assert len(tables) == 2, tables  # lengths 4 and 16
  assert result["bad_records"].sum() == 0


def _tiny_hf_folder(path):
  torch.manual_seed(0)
  model = transformers.Siglip2Model(tiny_siglip2_hf_config()).eval()
  model.save_pretrained(path)
  return model


def _cli(workdir, folder, steps):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2), PYTHONPATH=str(REPO))
  cmd = [sys.executable, "-m", "clipjax.main", "--config=configs/siglip.py",
         f"--config.model.checkpoint={folder}", f"--workdir={workdir}",
         f"--config.data.train=manifest:manifest={COCO}", "--config.data.naflex.lengths=(8, 16)",
         "--config.data.naflex.token_budget=32", f"--config.total_steps={steps}",
         "--config.checkpoint.every=2", "--config.log_every=1", "--config.eval.tasks=",
         "--config.data.num_workers=1"]
  return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  path = tmp_path_factory.mktemp("naflex") / "siglip2"
  return path, _tiny_hf_folder(path)


def test_evaluate_cli_reports_a_table_over_sequence_lengths(hf_folder, tmp_path):
  folder, _ = hf_folder
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PYTHONPATH=str(REPO))
  out = subprocess.run(
      [sys.executable, "-m", "clipjax.evaluate", "--config=configs/eval.py",
       f"--workdir={tmp_path}", f"--config.model.checkpoint={folder}",
       "--config.model.max_num_patches=(4, 16, 64)", "--config.eval.tasks=retrieval",
       f"--config.eval.retrieval.source=manifest:manifest={COCO}",
       "--config.eval.num_workers=0"],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line.split()[0] for line in out.stdout.splitlines() if line.strip().startswith("base@")]
  assert rows == ["base@4", "base@16", "base@64"]
  results = json.loads((tmp_path / "results.json").read_text())["retrieval"]
  recalls = {name: r["metrics"]["image_retrieval_mrr"] for name, r in results.items()}
  assert len(set(recalls.values())) > 1  # each length its own embeddings


def test_cli_fine_tunes_a_transformers_folder_and_hands_it_back(hf_folder, tmp_path):
  folder, original = hf_folder
  first = _cli(tmp_path / "run", folder, 4)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "NaFlex 8 x 8 patches, 4 x 16 patches" in first.stdout  # 32 patches on 2 devices
  second = _cli(tmp_path / "run", folder, 6)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from" in second.stdout and "at step 4" in second.stdout
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3, 4, 5, 6]
  # the export is a transformers folder of the fine-tuned weights
  out = tmp_path / "run/export/hf"
  tuned = transformers.Siglip2Model.from_pretrained(out).eval()
  processor = transformers.AutoImageProcessor.from_pretrained(out)
  from PIL import Image
  photos = [Image.open(p)
            for p in sorted((REPO / "third_party/coco_sample/images").glob("*.jpg"))[:4]]
  inputs = processor(images=photos, return_tensors="pt")
  model, params = clipjax.load_openclip(out)
  with torch.no_grad():
    theirs = tuned.get_image_features(**inputs).pooler_output.numpy()
    before = original.get_image_features(**inputs).pooler_output.numpy()
  ours = model.apply({"params": params}, {k: np.asarray(v) for k, v in inputs.items()},
                     method=model.encode_image)
  assert rel_err(ours, theirs) < 1e-5
  assert rel_err(theirs, before) > 1e-3  # fine-tuned, not the folder that went in
