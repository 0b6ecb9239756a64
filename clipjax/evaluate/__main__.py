r"""Evaluate OpenCLIP / clipjax checkpoints: zero-shot, retrieval, VQA, blending sweeps.

  python -m clipjax.evaluate --config=configs/eval.py --workdir=/tmp/eval \
      --config.model.arch=ViT-B-32 --config.model.checkpoint=open_clip_model.safetensors

With `model.adapted` set (a second checkpoint of the same architecture, e.g. DRAFT's output)
both models are evaluated and `model.blend` adds a β sweep: `embeddings` (the two text towers
blended on the same text) or `weights` (WiSE-FT). Writes results.json and PNG plots to workdir.
"""
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def _load(arch: str, checkpoint: str | None):
  import clipjax
  if checkpoint:
    return clipjax.load_openclip(checkpoint, arch=arch or None)
  from absl import logging
  logging.warning("model.checkpoint is empty: evaluating a randomly initialised %s", arch)
  return clipjax.create_model(arch)


def main(argv):
  del argv
  from clipjax.evaluate.blending import blend_params
  from clipjax.evaluate.embed import clip_encoders
  from clipjax.evaluate.runner import run_evaluation
  cfg = _CONFIG.value
  model, params = _load(cfg.model.arch, cfg.model.checkpoint)
  models = {"base": clip_encoders(model, params)}
  blend = None
  if cfg.model.adapted:
    adapted_model, adapted = _load(cfg.model.arch, cfg.model.adapted)
    if adapted_model.cfg != model.cfg:
      raise ValueError(f"model.adapted ({cfg.model.adapted}) is not the same architecture as "
                       f"model.checkpoint ({cfg.model.checkpoint}); blending needs both equal")
    models["adapted"] = clip_encoders(model, adapted)
    if cfg.model.blend == "embeddings":
      blend = ("base", "adapted")
    elif cfg.model.blend == "weights":
      for beta in cfg.eval.betas:
        models[f"wise_beta={beta}"] = clip_encoders(model, blend_params(params, adapted, beta))
    elif cfg.model.blend:
      raise ValueError(f"model.blend must be '', 'embeddings' or 'weights', got {cfg.model.blend!r}")
  run_evaluation(cfg.eval, models, _WORKDIR.value, blend=blend)


if __name__ == "__main__":
  app.run(main)
