r"""Evaluate OpenCLIP / clipjax checkpoints: zero-shot, retrieval, VQA, blending sweeps.

  python -m clipjax.evaluate --config=configs/eval.py --workdir=/tmp/eval \
      --config.model.checkpoint=workdirs/draft/export/open_clip_model.safetensors
  python -m clipjax.evaluate --config=configs/eval.py:coco --workdir=/tmp/eval \
      --config.model.checkpoint=ViT-B-32 --config.model.pretrained=laion2b_s34b_b79k \
      --config.eval.retrieval.source=coco:annotations=captions_val2017.json,image_root=val2017

`model.checkpoint` / `model.adapted` take every name `clipjax.load_openclip` takes; the
architecture comes with the weights (`model.arch` overrides it).

With `model.adapted` set (a second checkpoint of the same architecture, e.g. DRAFT's output)
both models are evaluated and `model.blend` adds a β sweep: `embeddings` (the two text towers
blended on the same text) or `weights` (WiSE-FT). Writes results.json and PNG plots to workdir.
"""
from absl import flags
from ml_collections import config_flags

from clipjax import cli
from clipjax.convert.load import load_or_create
from clipjax.errors import ConfigError
from clipjax.evaluate.blending import blend_params
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.runner import run_evaluation
from clipjax.evaluate.tasks import eval_tasks

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def _load(arch: str, checkpoint: str | None, pretrained: str | None = None):
  model, params, _, _ = load_or_create(checkpoint, pretrained or None, arch=arch or None,
                                       default_arch="ViT-S-16-tiny")
  return model, params


def main(argv):
  del argv
  cfg = _CONFIG.value
  eval_tasks(cfg.eval)
  if cfg.model.blend not in ("", "embeddings", "weights"):
    raise ConfigError(f"model.blend must be '', 'embeddings' or 'weights', got {cfg.model.blend!r}")
  model, params = _load(cfg.model.arch, cfg.model.checkpoint, cfg.model.get("pretrained"))
  models = {"base": clip_encoders(model, params)}
  blend = None
  if cfg.model.adapted:
    adapted_model, adapted = _load(cfg.model.arch, cfg.model.adapted)
    if adapted_model.cfg != model.cfg:
      raise ConfigError(f"model.adapted ({cfg.model.adapted}) is not the same architecture as "
                       f"model.checkpoint ({cfg.model.checkpoint}); blending needs both equal")
    models["adapted"] = clip_encoders(model, adapted)
    if cfg.model.blend == "embeddings":
      blend = ("base", "adapted")
    elif cfg.model.blend == "weights":
      for beta in cfg.eval.betas:
        models[f"wise_beta={beta}"] = clip_encoders(model, blend_params(params, adapted, beta))
  run_evaluation(cfg.eval, models, _WORKDIR.value, blend=blend)


if __name__ == "__main__":
  cli.run(main)
