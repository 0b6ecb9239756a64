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

A SigLIP 2 NaFlex model is evaluated at `model.max_num_patches` patches per image (default:
its own, 256), and at several with a tuple, one table row per length (the SigLIP 2 paper reports
quality per sequence length):

  python -m clipjax.evaluate --config=configs/eval.py --workdir=/tmp/eval \
      --config.model.checkpoint=hf-hub:google/siglip2-base-patch16-naflex \
      --config.model.max_num_patches="(64, 256, 576)"
"""
from absl import flags
from ml_collections import config_flags

from clipjax import cli
from clipjax.config import DEFAULT_ARCH
from clipjax.convert.load import load_or_create
from clipjax.errors import ConfigError
from clipjax.evaluate.blending import blend_params
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.runner import run_evaluation
from clipjax.evaluate.tasks import eval_options
from clipjax.models.registry import get_model_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Evaluation config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def _load(arch: str, checkpoint: str | None, pretrained: str | None = None):
  model, params, _, _ = load_or_create(checkpoint, pretrained or None, arch=arch or None,
                                       default_arch=DEFAULT_ARCH)
  return model, params


def main(argv):
  del argv
  cfg = _CONFIG.value
  eval_opts = eval_options(cfg.eval)
  if cfg.model.blend not in ("", "embeddings", "weights"):
    raise ConfigError(f"model.blend must be '', 'embeddings' or 'weights', got {cfg.model.blend!r}")
  if not cfg.model.checkpoint:  # the architecture is known before any weights are drawn
    _lengths(cfg.model.max_num_patches, get_model_config(cfg.model.arch or DEFAULT_ARCH))
  model, params = _load(cfg.model.arch, cfg.model.checkpoint, cfg.model.pretrained)
  lengths = _lengths(cfg.model.max_num_patches, model.cfg)
  models = {}
  for n in lengths:  # one row per sequence length of a NaFlex tower: "base@256", ...
    models[_named("base", n, lengths)] = clip_encoders(model, params, max_num_patches=n)
  blend = None
  if cfg.model.adapted:
    adapted_model, adapted = _load(cfg.model.arch, cfg.model.adapted)
    if adapted_model.cfg != model.cfg:
      raise ConfigError(f"model.adapted ({cfg.model.adapted}) is not the same architecture as "
                       f"model.checkpoint ({cfg.model.checkpoint}); blending needs both equal")
    for n in lengths:
      models[_named("adapted", n, lengths)] = clip_encoders(model, adapted, max_num_patches=n)
    if cfg.model.blend == "embeddings":  # the sweep at the first length
      blend = (_named("base", lengths[0], lengths), _named("adapted", lengths[0], lengths))
    elif cfg.model.blend == "weights":
      for beta in eval_opts.betas:
        for n in lengths:
          models[_named(f"wise_beta={beta}", n, lengths)] = clip_encoders(
              model, blend_params(params, adapted, beta), max_num_patches=n)
  run_evaluation(eval_opts, models, _WORKDIR.value, blend=blend)


def _lengths(value, model_cfg) -> tuple:
  """model.max_num_patches: the NaFlex sequence lengths to evaluate at ((None,): the model's
  own); only for a NaFlex image tower."""
  lengths = tuple(value) if isinstance(value, (tuple, list)) else ((value,) if value else ())
  if not lengths:
    return (None,)
  if not model_cfg.vision.naflex:
    raise ConfigError(f"model.max_num_patches={list(lengths)} is for SigLIP 2 NaFlex image "
                      f"towers; this model takes fixed-size images")
  if not all(isinstance(n, int) and n > 0 for n in lengths):
    raise ConfigError(f"model.max_num_patches={list(lengths)} must be positive patch counts")
  return lengths


def _named(name: str, length, lengths: tuple) -> str:
  return name if len(lengths) == 1 else f"{name}@{length}"


if __name__ == "__main__":
  cli.run(main)
