"""The distill method (docs/methods.md §7c) end to end: a frozen teacher checkpoint, a student
trained with the CLIP + distillation loss (the loss itself is checked against open_clip's
DistillClipLoss in tests/losses/test_losses.py), and its config errors."""
import json

import jax
import numpy as np
import pytest

import clipjax
from clipjax.errors import ConfigError
from clipjax.methods import method_config
from clipjax.train.loop import train
from clipjax.train.validate import validate


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
  model, params = clipjax.create_model("ViT-T-16-test", seed=5)
  clipjax.export_openclip(params, model.cfg, str(path))
  return str(path), params


def _config(teacher_path: str):
  c = method_config("distill")
  c.model.arch = "ViT-T-16-test"
  c.distill.teacher = teacher_path
  c.data.train = dict(kind="synthetic", size=256, resolution=32, seed=0, split="train")
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.log_every = 32, 4, 2
  c.checkpoint.every, c.eval = 0, None
  return c


def _losses(workdir, teacher_path, **distill):
  cfg = _config(teacher_path)
  cfg.distill.update(distill)
  validate(cfg)
  result = train(cfg, str(workdir))
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  return result, logged


@pytest.fixture(scope="module")
def in_step(teacher, tmp_path_factory):
  """The student trained against the teacher run inside the step."""
  return _losses(tmp_path_factory.mktemp("in_step"), teacher[0])


def test_student_trains_and_the_teacher_stays_frozen(teacher, in_step):
  result, logged = in_step
  for a, b in zip(jax.tree.leaves(result["params"]["teacher"]), jax.tree.leaves(teacher[1])):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert all(np.isfinite(r["loss"]) and r["distill"] > 0 for r in logged)
  assert all(abs(r["loss"] - r["contrastive"] - r["distill"]) < 1e-4 for r in logged)


def test_distill_config_errors(teacher, tmp_path):
  cfg = _config("")
  with pytest.raises(ConfigError, match="distill.teacher is empty"):
    validate(cfg)
  cfg = _config(teacher[0])
  cfg.freeze = ()
  with pytest.raises(ConfigError, match="freeze must include '\\^teacher/'"):
    validate(cfg)
  cfg = _config(teacher[0])
  cfg.model.arch = "ViT-S-16-tiny"  # 64 px images: the teacher reads 32 px
  with pytest.raises(ConfigError, match="they must agree"):
    validate(cfg)


def test_a_cached_teacher_gives_the_same_losses_and_may_read_other_inputs(teacher, in_step,
                                                                          tmp_path):
  """distill.cached: the teacher's embeddings of every image and caption computed once with its
  own preprocessing (here the student's too) give the losses of the teacher run in the step
  (float32 round-off, relative 1e-4); then a SigLIP teacher with 16-token ids and another image
  size (32 px for a 64 px student) trains a student only through the cache."""
  as_array = lambda logged: np.array([[r["loss"], r["distill"]] for r in logged])
  result, cached = _losses(tmp_path / "cached", teacher[0], cached=True)
  np.testing.assert_allclose(as_array(cached), as_array(in_step[1]), rtol=1e-4)
  assert set(result["params"]["teacher"]) == {"logit_scale"}  # no teacher tower on the devices
  assert any((tmp_path / "cached" / "frozen_cache").glob("captions-*.npz"))

  siglip = tmp_path / "siglip.safetensors"
  clipjax.export_openclip(clipjax.create_model("ViT-T-16-SigLIP2-test", seed=2)[1],
                          "ViT-T-16-SigLIP2-test", str(siglip))
  cfg = _config(str(siglip))
  cfg.model.arch = "ViT-S-16-tiny"  # 64 px, 77 tokens
  with pytest.raises(ConfigError, match="or set distill.cached=True"):
    validate(cfg)
  cfg.distill.cached = True
  validate(cfg)
  train(cfg, str(tmp_path / "siglip_teacher"))
  logged = [json.loads(line) for line in (tmp_path / "siglip_teacher/metrics.jsonl").open()]
  assert all(np.isfinite(r["loss"]) and r["distill"] > 0 for r in logged)
  cfg.data.augment = True
  with pytest.raises(ConfigError, match="distill.cached embeds each image once"):
    validate(cfg)
