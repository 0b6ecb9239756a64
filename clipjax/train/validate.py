"""Checks a training config in seconds, before any model init, cache building or base
pretraining: a typo in a source kind, a path, the architecture, a freeze pattern or the batch
size is a `ConfigError` naming the field, not a failure an hour into the run.

`validate` returns the run's typed options (`clipjax.options.RunOptions`), which the rest of
training reads. The work dir's guards (one run at a time, the config bound once it has a checkpoint) are in
`clipjax.train.workdir`.
"""
from __future__ import annotations

import re
from typing import Any

import jax

from clipjax.config import DEFAULT_ARCH, choice
from clipjax.convert.load import describe_checkpoint
from clipjax.convert.openclip import param_shapes
from clipjax.data.batch_plan import batch_plan
from clipjax.data.builder import check_source_spec
from clipjax.errors import ConfigError
from clipjax.losses import EXCHANGES, unread
from clipjax.methods import Method, check_layout, get_method, method_names
from clipjax.methods.base import loss_options, run_options
from clipjax.models.clip import CLIP
from clipjax.models.layers import ATTENTION_KERNELS, COMPUTE_DTYPES, REMAT_POLICIES
from clipjax.models.lora import DEFAULT_TARGETS, lora_targets
from clipjax.models.naming import param_paths
from clipjax.models.registry import get_model_config
from clipjax.options import RunOptions
from clipjax.train.optim import OPTIMIZERS


def _check_model(cfg: RunOptions) -> Any:
  """The architecture config (resolved from the checkpoint when arch is empty)."""
  choice("model.dtype", cfg.model.dtype, ("auto", *COMPUTE_DTYPES))
  choice("model.attention", cfg.model.attention, ATTENTION_KERNELS)
  choice("model.remat_policy", cfg.model.remat_policy, REMAT_POLICIES)
  if cfg.model.attention == "cudnn" and jax.default_backend() not in ("gpu", "cuda"):
    raise ConfigError(f"model.attention='cudnn' needs a GPU, this run's JAX backend is "
                      f"{jax.default_backend()} (use 'auto' or 'xla')")
  if cfg.model.checkpoint:
    return describe_checkpoint(cfg.model.checkpoint, cfg.model.arch or None,
                               cfg.model.pretrained or None)
  if cfg.model.pretrained:
    raise ConfigError("model.pretrained (a tag) needs model.checkpoint=ARCH, e.g. "
                      "--config.model.checkpoint=ViT-B-32 --config.model.pretrained=laion2b_s34b_b79k")
  return get_model_config(cfg.model.arch or DEFAULT_ARCH)


def _check_freeze(cfg: RunOptions, method: Method, arch_cfg) -> None:
  """Every freeze pattern is a regex matching a CLIP parameter (or naming one of the method's
  own towers, whose paths exist only after init); data.cache_frozen needs the whole image
  tower frozen and no augmentation."""
  paths = ["clip/" + p for p in jax.tree.leaves(param_paths(param_shapes(arch_cfg)))]
  compiled = []
  for pattern in cfg.freeze:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ConfigError(f"freeze pattern {pattern!r} is not a valid regex: {e}") from None
    if any(tower in pattern for tower in method.extra_towers):
      continue
    if not any(compiled[-1].search(p) for p in paths):
      raise ConfigError(f"freeze pattern {pattern!r} matches no parameter; paths look like "
                        f"{paths[1]}, {paths[-1]}")
  if cfg.data.cache_frozen:
    visual = [p for p in paths if p.startswith("clip/visual/")]
    if (not method.caches_frozen_images or cfg.data.augment
        or not all(any(c.search(p) for c in compiled) for p in visual)):
      cacheable = [n for n in method_names() if get_method(n).caches_frozen_images]
      raise ConfigError(f"data.cache_frozen needs a frozen image tower (freeze ^clip/visual/) "
                        f"without augmentation (data.augment=False), in a method that can "
                        f"cache it {cacheable}")


def _check_lora(cfg: RunOptions, arch_cfg, method: Method) -> None:
  lora = cfg.lora
  if not lora.rank:
    return
  if lora.rank < 0 or lora.alpha <= 0:
    raise ConfigError(f"lora.rank={lora.rank} must be >= 0 (0: off) and lora.alpha="
                      f"{lora.alpha} > 0")
  if not 0 <= lora.dropout < 1:
    raise ConfigError(f"lora.dropout={lora.dropout} must be in [0, 1)")
  if lora.dropout and cfg.optim.accum_steps > 1:  # as model.patch_dropout
    raise ConfigError("lora.dropout does not combine with optim.accum_steps > 1 (GradCache "
                      "recomputes the towers and would draw other masks)")
  for pattern in lora.targets:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"lora.targets pattern {pattern!r} is not a valid regex: {e}") from None
  shapes = {"clip": param_shapes(arch_cfg)}
  if set(method.lora_towers) - {"clip"}:
    shapes |= jax.eval_shape(lambda c: method.init_params(CLIP(arch_cfg), c, cfg), shapes["clip"])
  shapes = {t: shapes[t] for t in method.lora_towers}
  if not lora_targets(shapes, tuple(lora.targets) or DEFAULT_TARGETS, tuple(cfg.freeze)):
    raise ConfigError(f"lora.targets {list(lora.targets) or list(DEFAULT_TARGETS)} match no "
                      f"kernel outside the freeze rules {list(cfg.freeze)}")


def _check_patch_dropout(cfg: RunOptions, arch_cfg) -> None:
  rate = cfg.model.patch_dropout
  if not rate:
    return
  if not 0 < rate < 1:
    raise ConfigError(f"model.patch_dropout={rate} must be in [0, 1)")
  if getattr(arch_cfg.vision, "is_resnet", False):
    raise ConfigError("model.patch_dropout needs a ViT image tower; this architecture's is a "
                      "ResNet")
  if arch_cfg.vision.naflex:
    raise ConfigError("model.patch_dropout does not apply to a NaFlex image tower (its padding "
                      "is masked by position; use shorter data.naflex.lengths for less work)")
  if cfg.optim.accum_steps > 1:
    raise ConfigError("model.patch_dropout does not combine with optim.accum_steps > 1 (GradCache "
                      "recomputes the towers per device and would draw other patches)")


def _check_loss(cfg: RunOptions, method: Method) -> None:
  """loss.exchange is auto or a known exchange, loss.block_size >= 0, and every loss setting the
  run changes (`methods.base.loss_options`) is read by each loss of its method (`@reads`):
  none is silently ignored."""
  choice("loss.exchange", cfg.loss.exchange, ("auto", *EXCHANGES))
  if cfg.loss.block_size < 0:
    raise ConfigError(f"loss.block_size={cfg.loss.block_size} must be >= 0 (0: the dense "
                      f"logits)")
  options = loss_options(cfg)
  fields = {"form": f"{method.name}.form", "bidirectional": f"{method.name}.bidirectional",
            "block_size": "loss.block_size", "exchange": "loss.exchange"}
  keep = {"form": "'softmax'", "bidirectional": "False", "block_size": "0",
          "exchange": "all_gather (or auto)"}
  for loss in method.loss_functions:
    for setting in unread(loss, options):
      raise ConfigError(f"{fields[setting]}={getattr(options, setting)!r} is not read by "
                        f"{method.name}'s loss ({loss.__name__}); set {fields[setting]}="
                        f"{keep[setting]}")


def validate(config, *, check_base: bool = True) -> RunOptions:
  """The typed options of a training config (a ConfigDict), or ConfigError for the first
  problem found. check_base: check `config.base` too (the base run a method adapts)."""
  chain = config
  while chain is not None:  # the run and the base runs it adapts
    choice("method", chain.method, method_names())
    check_layout(chain)
    chain = chain.get("base")
  cfg = run_options(config)  # eval.tasks are read (and checked) here
  _check(cfg, check_base)
  return cfg


def _check(cfg: RunOptions, check_base: bool) -> None:
  method = get_method(cfg.method)
  if cfg.total_steps < 0 or cfg.log_every < 1:
    raise ConfigError(f"total_steps ({cfg.total_steps}) must be >= 0 and log_every "
                      f"({cfg.log_every}) >= 1")
  check_source_spec(cfg.data.train, "data.train")
  choice("optim.name", cfg.optim.name, OPTIMIZERS)
  if not 0 <= cfg.optim.ema_decay < 1:
    raise ConfigError(f"optim.ema_decay={cfg.optim.ema_decay} must be in [0, 1) (0: no average)")
  method.validate(cfg)
  _check_loss(cfg, method)
  arch_cfg = _check_model(cfg)
  batch_plan(cfg, jax.device_count(), jax.process_count(), arch_cfg.naflex_patches)
  method.validate_model(cfg, arch_cfg)
  _check_patch_dropout(cfg, arch_cfg)
  _check_lora(cfg, arch_cfg, method)
  _check_freeze(cfg, method, arch_cfg)
  if check_base and cfg.base is not None and not cfg.model.checkpoint:
    _check(cfg.base, check_base)

