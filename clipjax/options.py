"""A training run's options as typed, frozen values: one dataclass per config block, each field's
default defined and documented here once. `clipjax.config.base_config` writes the ConfigDict
that config files and command-line overrides edit from these defaults (so `--help` lists every
field), and `RunOptions.of` reads such a ConfigDict back, filling a field an older config lacks
with its default (old work dirs resume). The training, method, evaluation and main code read
these values, never the ConfigDict.

A method's own block (`config.<method>`) and each evaluation task's block stay the method's and
task's: their defaults are the `settings` of the class that reads them, merged under the
config's values into an immutable `FrozenConfigDict`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections

from clipjax.data.builder import synthetic
from clipjax.data.pipeline import DEFAULT_MAX_IMAGE_PIXELS
from clipjax.evaluate.blending import THESIS_BETAS


def _optional(default: Any = None) -> Any:
  """A field set only by the methods that read it (absent from `base_config`)."""
  return dataclasses.field(default=default, metadata={"optional": True})


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """`config.model`: the CLIP that trains."""
  # The weights to start from, any name `clipjax.load_openclip` takes (a file, a directory,
  # hf-hub:ORG/REPO, local-dir:DIR, or an architecture with `pretrained`=TAG); empty: random
  # init, or for draft / three_tower the base CLIP pretrained by `config.base`.
  checkpoint: str = ""
  # An open_clip name (or clipjax test config, or model JSON); empty: the checkpoint's own
  # (tag, hub config, JSON next to the file, or tensor shapes), DEFAULT_ARCH from scratch.
  arch: str = ""
  pretrained: str = ""  # the tag of an architecture name in `checkpoint`
  # The towers' compute dtype, "auto" (bfloat16 on TPUs / GPUs, float32 on CPUs), "float32" or
  # "bfloat16"; parameters, optimizer state and losses are float32 regardless.
  dtype: str = "auto"
  # Recompute each block's activations in the backward pass, keeping what remat_policy names
  # ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable").
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  # Each transformer tower's blocks under one nn.scan (compiles one block, not L; params
  # stacked on a leading layer axis, exported in open_clip's per-block names).
  scan_layers: bool = False
  context_length: int = 0  # 0: the architecture's; longer interpolates the positions
  # The attention kernel, "auto" (cuDNN flash attention on GPUs in bfloat16 / float16, XLA
  # elsewhere), "xla" or "cudnn" (clipjax/models/layers.py `attention_kernel`).
  attention: str = "auto"
  # The fraction of image patch tokens dropped per image while training (FLIP; ViT and SigLIP
  # image towers; roughly that fraction less image-tower work).
  patch_dropout: float = 0.0
  # From scratch: the initial logit scale (log t) and bias (SigLIP's -10) instead of the
  # architecture's.
  init_logit_scale: float | None = _optional()
  init_logit_bias: float | None = _optional()


@dataclasses.dataclass(frozen=True)
class NaflexOptions:
  """`config.data.naflex`: batches of a SigLIP 2 NaFlex image tower (clipjax/data/batching.py).
  Each batch has one sequence length drawn from `lengths` (patches per image; empty: the
  model's max_num_patches) and token_budget // length rows per device (0: batch_size / devices
  at the longest length, so that length trains at batch_size); the step compiles once per
  length."""
  lengths: tuple[int, ...] = ()
  token_budget: int = 0


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """`config.data`: what trains and how it is read."""
  # A source spec (clipjax/data/builder.py), e.g. on the command line
  # --config.data.train=manifest:manifest=data/train.jsonl,image_root=data
  train: Mapping[str, Any] = dataclasses.field(default_factory=lambda: synthetic(20_000))
  augment: bool = False  # random resized crops (open_clip's training transform)
  num_workers: int = 2   # grain worker processes
  # Threads per worker process reading + preparing records; -1 = 0 with workers (fastest for
  # local files) or for synthetic scenes (drawing them holds the GIL), else grain's 16 in the
  # training process; more for high-latency storage such as gs://.
  read_threads: int = -1
  # Cut token ids after the batch's last end-of-text token (exact, and 2-4x less text-tower
  # work for real captions of ~15 of 77 tokens); skipped for bidirectional SigLIP text towers,
  # which read the padding.
  trim_text: bool = True
  caption_field: str = "caption"  # the record field trained as the caption (e.g. long_caption)
  # Embed each image once with a frozen, unaugmented image tower and skip image decoding
  # afterwards (lit, draft, three_tower; clipjax/train/frozen_cache.py).
  cache_frozen: bool = False
  bad_window: int = 1000  # stop when this many records in a row are bad (0: the whole source)
  # A larger image (width x height, read from its header before decoding) is skipped as a bad
  # record `too_large`; the default is Pillow's decompression-bomb limit.
  max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
  naflex: NaflexOptions = NaflexOptions()
  # The second stream of text records (query / positive / [negatives]) of multitask, its
  # global batch, and the hard negatives read per record.
  text: Mapping[str, Any] | None = _optional()
  text_batch_size: int | None = _optional()
  num_negatives: int = _optional(0)


@dataclasses.dataclass(frozen=True)
class OptimOptions:
  """`config.optim`."""
  # The optax optimizer (clipjax/train/optim.py OPTIMIZERS): adamw, lion, adafactor, muon
  # (Newton–Schulz on matrices, AdamW on the other leaves) or sgd (momentum b1).
  name: str = "adamw"
  lr: float = 5e-4  # peak; linear warm-up, then cosine decay to 0 at total_steps
  warmup_steps: int = 30
  weight_decay: float = 0.2
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-6
  grad_clip_norm: float = 1.0  # 0: none
  # > 0: an average of the trained weights, evaluated and exported (export/ema) beside them;
  # ema_warmup: timm's warm-up of the decay (clipjax/train/ema.py).
  ema_decay: float = 0.0
  ema_warmup: bool = False
  accum_steps: int = 1  # > 1: GradCache sub-batches, every negative kept (train/step.py)


@dataclasses.dataclass(frozen=True)
class LoraOptions:
  """`config.lora`: rank > 0 puts LoRA adapters (clipjax/models/lora.py) on the Dense kernels
  matching `targets` (regexes on parameter paths, like freeze; empty: attention q/k/v/out and
  MLP of every tower) and no freeze rule; the pretrained towers are then frozen, the adapters
  trained and merged into the evaluated and exported weights. alpha / rank scales the update;
  dropout drops each adapter's input features in training (PEFT's lora_dropout)."""
  rank: int = 0
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ()
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class LossBlockOptions:
  """`config.loss`: what every method's global loss shares (the method's own settings —
  weights, form, temperature — are its block). block_size > 0: the tiled loss path with this
  many keys per tile. exchange: how each device sees the other devices' rows, "all_gather"
  (the whole global batch on every device), "ring" (shards passed round the mesh with
  ppermute: the loss's memory follows the device's rows, not the global batch;
  clipjax/losses/ring.py) or "auto": the ring from a global batch of 32,768 on where the loss
  has one (docs/losses.md)."""
  block_size: int = 0
  exchange: str = "auto"


@dataclasses.dataclass(frozen=True)
class MeshOptions:
  """`config.mesh`: data -1 takes every device left; fsdp > 1 splits parameters (and optimizer
  state) matching fsdp_rules with at least fsdp_min_size elements over that many devices
  (clipjax/parallel/sharding.py)."""
  data: int = -1
  fsdp: int = 1
  fsdp_rules: tuple[str, ...] = (".*",)
  fsdp_min_size: int = 2**14


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
  """`config.distributed`: multi-host without a TPU's auto-discovery (GPU clusters, local
  processes; docs/tpu.md)."""
  coordinator_address: str = ""
  num_processes: int = 1
  process_id: int = 0


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
  """`config.checkpoint`: save every `every` steps (and at the end), keep the last `keep`."""
  every: int = 100
  keep: int = 2


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """`config.export`: open_clip safetensors and / or a Hugging Face folder; wise_beta: the
  WiSE-FT weight blend of the methods that adapt a pretrained CLIP."""
  openclip: bool = True
  hf: bool = True
  wise_beta: float = 0.9


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """`config.eval` (read by `clipjax.evaluate.tasks.eval_options`): the tasks to run, by name,
  each with its block `eval.<task>` = {source, the task's settings}; the image batch size and
  loader workers; the β values of a blending sweep; plots: PNG plots beside results.json (β
  sweeps, per-class recall), False for tables and results.json only."""
  tasks: tuple[str, ...] = ()
  blocks: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  batch_size: int = 64
  num_workers: int = 2
  betas: tuple[float, ...] = THESIS_BETAS
  plots: bool = True


BLOCKS = {"model": ModelOptions, "data": DataOptions, "optim": OptimOptions,
           "lora": LoraOptions, "loss": LossBlockOptions, "mesh": MeshOptions,
           "distributed": DistributedOptions, "checkpoint": CheckpointOptions,
           "export": ExportOptions}


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """A whole training run. `settings` is the method's own block (`config.<method>`), `base`
  the run that pretrains the CLIP it adapts when there is no checkpoint (its model fields
  inherited from this run's), `config` the ConfigDict these were read from (saved in the work
  dir)."""
  method: str
  seed: int = 0
  batch_size: int = 64  # global, over all hosts and devices
  total_steps: int = 300
  log_every: int = 10
  freeze: tuple[str, ...] = ()  # regexes on parameter paths (e.g. "^clip/visual/")
  model: ModelOptions = ModelOptions()
  data: DataOptions = DataOptions()
  optim: OptimOptions = OptimOptions()
  lora: LoraOptions = LoraOptions()
  loss: LossBlockOptions = LossBlockOptions()
  mesh: MeshOptions = MeshOptions()
  distributed: DistributedOptions = DistributedOptions()
  checkpoint: CheckpointOptions = CheckpointOptions()
  export: ExportOptions = ExportOptions()
  eval: EvalOptions | None = None
  settings: Any = None
  base: RunOptions | None = None
  config: Any = dataclasses.field(default=None, compare=False, repr=False)

  @classmethod
  def of(cls, cfg: ml_collections.ConfigDict, settings: Callable[[str], Mapping[str, Any]],
         eval_options: Callable[[Any], EvalOptions]) -> RunOptions:
    """The options of a config; `settings(method)`: that method's block defaults;
    `eval_options`: the parser of the eval block (`clipjax.methods.run_options` passes the
    registries')."""
    fields = {f.name: cfg[f.name] for f in dataclasses.fields(cls)
              if f.name in cfg and f.name not in (*BLOCKS, "eval", "settings", "base", "config")}
    if "freeze" in fields:
      fields["freeze"] = tuple(fields["freeze"])
    blocks = {name: read_block(kind, cfg.get(name)) for name, kind in BLOCKS.items()}
    base = None
    if cfg.get("base") is not None:
      base = cls.of(inherit_model(cfg.base, cfg), settings, eval_options)
    return cls(**fields, **blocks,
               eval=eval_options(cfg.eval) if cfg.get("eval") else None,
               settings=frozen_block(settings(cfg.method), cfg.get(cfg.method)),
               base=base, config=cfg)


def read_block(kind: type, block: Mapping[str, Any] | None) -> Any:
  """A block's dataclass from its config values (missing ones: the defaults); tuples for
  sequences, plain dicts for mappings (source specs)."""
  values = {}
  for f in dataclasses.fields(kind):
    if not block or f.name not in block:
      continue
    value = block[f.name]
    if dataclasses.is_dataclass(f.default):
      value = read_block(type(f.default), value)
    elif isinstance(value, (list, tuple)):
      value = tuple(value)
    elif isinstance(value, (Mapping, ml_collections.ConfigDict)):
      value = _plain(value)
    values[f.name] = value
  return kind(**values)


def block_defaults(kind: type) -> dict[str, Any]:
  """The config block `base_config` writes: every field but the optional ones."""
  out = {}
  for f in dataclasses.fields(kind):
    if f.metadata.get("optional"):
      continue
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    out[f.name] = block_defaults(type(default)) if dataclasses.is_dataclass(default) else default
  return out


def frozen_block(defaults: Mapping[str, Any], block: Mapping[str, Any] | None
                 ) -> ml_collections.FrozenConfigDict:
  """`defaults` (a method's or task's settings) overridden by the config's block, immutable."""
  merged = _merge(_plain(defaults), _plain(block or {}))
  return ml_collections.FrozenConfigDict(merged)


def inherit_model(base: ml_collections.ConfigDict, cfg: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """A copy of the base run's config with the adapted run's architecture and tower build (the
  base is the same architecture; it keeps its own context length)."""
  base = ml_collections.ConfigDict(base.to_dict())
  for field in ("arch", "dtype", "remat", "remat_policy", "scan_layers", "attention"):
    if field in cfg.model:
      base.model[field] = cfg.model[field]
  return base


def _plain(value: Any) -> Any:
  if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
    value = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def _merge(defaults: dict, values: dict) -> dict:
  out = dict(defaults)
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      value = _merge(out[key], value)
    out[key] = value
  return out
