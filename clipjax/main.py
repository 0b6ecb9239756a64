r"""Train any method of clipjax end to end.

  python -m clipjax.main --config=configs/draft.py [--workdir=DIR] [--config.total_steps=500]

Rerunning the same command resumes from the work dir's latest checkpoint. At the end the
model is evaluated (config.eval) and exported as open_clip and Hugging Face files under
`WORKDIR/export`. Multi-host: set config.distributed.* or the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID variables (Cloud TPU needs neither); see docs/tpu.md.
"""
from __future__ import annotations

import dataclasses
import os

import jax
from absl import flags, logging
from ml_collections import config_flags

from clipjax import cli
from clipjax.convert.hf import export_hf
from clipjax.convert.load import load_openclip
from clipjax.convert.openclip import export_openclip, pytorch_load_line
from clipjax.convert.peft import export_peft
from clipjax.errors import ConfigError
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.runner import run_evaluation
from clipjax.methods import get_method
from clipjax.methods.context import with_lora_merged
from clipjax.methods.layout import where_now
from clipjax.options import DistributedOptions, RunOptions, read_block
from clipjax.parallel.mesh import initialize_distributed
from clipjax.train.loop import TrainingError, train
from clipjax.train.validate import validate
from clipjax.train.workdir import WorkdirLock, check_workdir_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work dir (default: ./workdirs/<method>).")


def _export(cfg: RunOptions, model, params, out_dir: str) -> dict[str, str]:
  """open_clip (+ HF) files of CLIP params; gathered to host memory, written by process 0."""
  written = {}
  if jax.process_index() != 0:
    return written
  if cfg.export.openclip:
    path = os.path.join(out_dir, "open_clip_model.safetensors")
    export_openclip(params, model.cfg, path)
    written["open_clip"] = path
  if cfg.export.hf:
    written["hf"] = str(export_hf(params, model.cfg, os.path.join(out_dir, "hf")))
  return written


def _export_adapters(cfg: RunOptions, model, params, out_dir: str) -> dict[str, str]:
  """With LoRA and export.hf: the adapters as an HF PEFT folder (`peft/`) and the base weights
  they adapt as the HF folder PEFT loads them onto (`hf_base/`); process 0 writes."""
  adapters = {k: v for k, v in params.get("lora", {}).items() if k.startswith("clip.")}
  if not adapters or not cfg.export.hf or jax.process_index() != 0:
    return {}  # (a three_tower run's dialogue-tower adapters are exported merged only)
  base_dir, peft_dir = os.path.join(out_dir, "hf_base"), os.path.join(out_dir, "peft")
  export_hf(params["clip"], model.cfg, base_dir)
  export_peft(adapters, model.cfg, peft_dir, rank=cfg.lora.rank, alpha=cfg.lora.alpha,
              dropout=cfg.lora.dropout, base=os.path.abspath(base_dir))
  return {"hf_base": base_dir, "peft": peft_dir}


def _train_base(cfg: RunOptions, workdir: str) -> tuple[RunOptions, dict]:
  """Trains `cfg.base` in WORKDIR/base (reusing a finished run there; its own base first, so
  stages chain). Returns cfg with model.checkpoint at the base's open_clip export, and the
  base's CLIP params."""
  base_cfg, base_dir = cfg.base, os.path.join(workdir, "base")
  if base_cfg.base is not None and not base_cfg.model.checkpoint:
    base_cfg, _ = _train_base(base_cfg, base_dir)
  print(f"no model.checkpoint: training (or reusing) the {base_cfg.method} base in {base_dir}",
        flush=True)
  check_workdir_config(base_cfg.config, base_dir)
  base = train(base_cfg, base_dir)
  base["params"] = with_lora_merged(base["params"], base_cfg.lora)
  exported = _export(base_cfg, base["model"], base["params"]["clip"],
                     os.path.join(base_dir, "export"))
  model = dataclasses.replace(cfg.model, checkpoint=exported["open_clip"])
  return dataclasses.replace(cfg, model=model), base["params"]["clip"]


def run(config, workdir: str) -> dict:
  """Base pretraining (if needed), training, export and evaluation in `workdir`, which no
  other run may use meanwhile (clipjax.train.workdir). Returns the results."""
  # Seconds, before anything is written (a typo leaves no work dir behind), any model init,
  # cache or base pretraining.
  cfg = validate(config)
  with WorkdirLock(workdir):
    return _run(config, cfg, workdir)


def _run(config, cfg: RunOptions, workdir: str) -> dict:
  check_workdir_config(config, workdir)
  method = get_method(cfg.method)
  base_params = None
  if cfg.base is not None and not cfg.model.checkpoint:
    if jax.process_count() > 1:  # only process 0 would write the base export
      raise ValueError("multi-host runs need config.model.checkpoint (the built-in base "
                       "pretraining is for single-host demos)")
    cfg, base_params = _train_base(cfg, workdir)
  result = train(cfg, workdir)
  # LoRA adapters merged into the weights that are exported and evaluated
  model, params = result["model"], with_lora_merged(result["params"], cfg.lora)
  if result["ema_params"] is not None:
    result["ema_params"] = with_lora_merged(result["ema_params"], cfg.lora)
  export_dir = os.path.join(workdir, "export")
  exports = _export(cfg, model, params["clip"], export_dir)
  exports.update(_export_adapters(cfg, model, result["params"], export_dir))
  if base_params is None and method.adapts_pretrained:
    base_params = load_openclip(cfg.model.checkpoint, cfg.model.pretrained or None,
                                arch=cfg.model.arch or None)[1]
  plan = method.evaluate(model, params, base_params, cfg)
  if result["ema_params"] is not None:  # the average beside the trained weights
    plan.models[f"{cfg.method}_ema"] = clip_encoders(model, result["ema_params"]["clip"])
    plan.exports["ema"] = ("ema", result["ema_params"]["clip"])
  for name, (subdir, extra) in plan.exports.items():
    exports.update({f"{name}_{k}": v for k, v in _export(
        cfg, model, extra, os.path.join(export_dir, subdir)).items()})
  results = {}
  if cfg.eval is not None and cfg.eval.tasks and jax.process_index() == 0:
    results = run_evaluation(cfg.eval, plan.models, os.path.join(workdir, "eval"),
                             blend=plan.blend)
  if exports:
    print("\nexported:")
    for name, path in exports.items():
      print(f"  {name}: {path}")
    if model.cfg.vision.naflex and "hf" in exports:  # open_clip 3.x: no NaFlex
      hf = str(exports["hf"])
      print(f"load in PyTorch:\n  from transformers import AutoImageProcessor, AutoModel; "
            f"model = AutoModel.from_pretrained({hf!r}); "
            f"processor = AutoImageProcessor.from_pretrained({hf!r})")
    elif "open_clip" in exports:
      print(f"load in PyTorch:\n  {pytorch_load_line(exports['open_clip'], model.cfg)}")
  return results


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
  cfg = _CONFIG.value
  if cfg is None:
    raise ConfigError("--config is required, e.g. --config=configs/draft.py")
  if not flags.FLAGS["verbosity"].present:  # keep the progress bar readable; -v 0 for INFO
    logging.set_verbosity(logging.WARNING)
  # Before validation (it counts devices): the block alone, defaults where a config has none.
  dist = read_block(DistributedOptions, cfg.get("distributed"))
  if dist.num_processes > 1:
    initialize_distributed(dist.coordinator_address or None, dist.num_processes,
                           dist.process_id)
  elif os.environ.get("JAX_COORDINATOR_ADDRESS"):
    if os.environ["JAX_COORDINATOR_ADDRESS"] == "auto":  # clipjax's switch, not an address:
      del os.environ["JAX_COORDINATOR_ADDRESS"]          # let JAX discover the TPU slice
    initialize_distributed()
  workdir = _WORKDIR.value or os.path.join("workdirs", cfg.method)
  try:
    run(cfg, workdir)
  except TrainingError as e:
    logging.error("%s", e)
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  cli.run(main, field_hint=where_now)
