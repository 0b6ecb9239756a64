"""Helpers of the method tests (tests/methods/) and of the training tests that run a method's
config on the tiny model: a config file with the suite's small settings, a one-device run, the
held-out retrieval R@1 on the synthetic scenes."""
import importlib.util

import jax
import numpy as np
from conftest import REPO

import clipjax.data.builder
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.tasks import EvalRun
from clipjax.evaluate.tasks.retrieval import retrieval
from clipjax.train.loop import train

HELD_OUT = 256
CHANCE = 1 / HELD_OUT


def config_file(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg), as `--config=configs/<name>.py:arg` reads it."""
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def load_config(name, **overrides):
  """configs/<name>.py on the tiny model and the synthetic scenes, 40 steps of 64, no
  evaluation, checkpoint or base run; `overrides`: dotted fields set last."""
  cfg = config_file(name)
  cfg.model.arch = "ViT-T-16-test"
  cfg.data.train = dict(kind="synthetic", size=4096, resolution=32, seed=0, split="train")
  cfg.data.num_workers = 0  # worker processes are covered by the pipeline, main and HF tests
  cfg.batch_size, cfg.total_steps, cfg.log_every = 64, 40, 10
  cfg.optim.warmup_steps = 5
  cfg.checkpoint.every = 0
  cfg.eval = None
  cfg.base = None
  for key, value in overrides.items():
    target = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return cfg


def fit(cfg, workdir) -> dict:
  return train(cfg, str(workdir), devices=jax.devices()[:1])


def held_out_r1(model, clip_params):
  source = clipjax.data.builder.make_source(
      dict(kind="synthetic", size=HELD_OUT, resolution=32, seed=0, split="eval"))
  res = retrieval([clip_encoders(model, clip_params)], source, EvalRun("", num_workers=0))
  return res["metrics"]["image_retrieval_recall@1"]


def jax_leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
