"""What the config files in configs/ share: the argument parser, the synthetic source and
evaluation blocks, and the fields every run reads (each documented here once). A method's own
settings are its block `config.<method>`, added with its defaults by
`clipjax.methods.method_config`."""
from __future__ import annotations

import difflib
from typing import Any

import ml_collections

from clipjax.data.builder import synthetic
from clipjax.errors import ConfigError
from clipjax.evaluate.tasks import eval_block

# The architecture of runs from scratch when model.arch is empty (a checkpoint brings its own).
DEFAULT_ARCH = "ViT-S-16-tiny"


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """The `configs/x.py:k=v,flag` argument: each value cast to its default's type, a bare name
  sets a bool default to True; an unknown name is a ConfigError listing the known ones."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults), n=1)
      raise ConfigError(f"config argument {key!r} is not one of {sorted(defaults)}"
                        + (f" (did you mean {close[0]!r}?)" if close else ""))
    kind = type(defaults[key])
    if not has_value:
      if kind is not bool:
        raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif kind is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise ConfigError(f"config argument {key}={value!r} is not {article} {kind.__name__}"
                          ) from None
  return out


def base_config(method: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = method  # a registered method: clipjax.methods.method_names()
  c.seed = 0
  # checkpoint: the weights to start from, any name `clipjax.load_openclip` takes (a file, a
  # directory, hf-hub:ORG/REPO, local-dir:DIR, or an architecture with `pretrained`=TAG);
  # empty: random init, or for draft/three_tower the base CLIP pretrained by `base`.
  # arch: an open_clip name (or clipjax test config, or model JSON); empty: the checkpoint's
  # own (tag, hub config, JSON next to the file, or tensor shapes), DEFAULT_ARCH from scratch.
  # context_length: 0 = the architecture's; longer interpolates the checkpoint's positions.
  # dtype: the towers' compute dtype, "auto" (bfloat16 on TPUs / GPUs, float32 on CPUs),
  # "float32" or "bfloat16"; parameters, optimizer state and losses are float32 regardless.
  # attention: the attention kernel, "auto" (cuDNN flash attention on GPUs in bfloat16 /
  # float16, XLA elsewhere), "xla" or "cudnn" (clipjax/models/layers.py `attention_kernel`).
  # remat: recompute each block's activations in the backward pass, keeping what
  # remat_policy names ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable").
  # scan_layers: each transformer tower's blocks under one nn.scan (compiles one block, not L;
  # params stacked on a leading layer axis, exported in open_clip's per-block names).
  # patch_dropout: the fraction of image patch tokens dropped per image while training (FLIP;
  # ViT and SigLIP image towers; roughly that fraction less image-tower work).
  c.model = dict(arch="", checkpoint="", pretrained="", dtype="auto", remat=False,
                 remat_policy="nothing_saveable", scan_layers=False, context_length=0,
                 attention="auto", patch_dropout=0.0)
  # trim_text: cut token ids after the batch's last end-of-text token (exact, and 2-4x less
  # text-tower work for real captions of ~15 of 77 tokens); skipped for bidirectional SigLIP
  # text towers, which read the padding.
  # caption_field: the record field trained as the caption (e.g. long_caption).
  # cache_frozen: embed each image once with a frozen, unaugmented image tower and skip image
  # decoding afterwards (lit, draft, three_tower; clipjax/train/frozen_cache.py).
  # read_threads: threads per worker process reading + preparing records; -1 = 0 with workers
  # (fastest for local files) or for synthetic scenes (drawing them holds the GIL), else
  # grain's 16 in the training process; more for high-latency storage such as gs://.
  # train: a source spec (clipjax/data/builder.py), e.g. on the command line
  # --config.data.train=manifest:manifest=data/train.jsonl,image_root=data
  # bad_window: stop when this many records in a row are bad (0: the whole source).
  # max_image_pixels: a larger image (width x height, read from its header before decoding)
  # is skipped as a bad record `too_large`; the default is Pillow's decompression-bomb limit.
  # naflex: batches of a SigLIP 2 NaFlex image tower (clipjax/data/batching.py). Each batch has
  # one sequence length drawn from `lengths` (patches per image; empty: the model's
  # max_num_patches) and token_budget // length rows per device (0: batch_size / devices at the
  # longest length, so that length trains at batch_size); the step compiles once per length.
  c.data = dict(train=synthetic(20_000), augment=False, num_workers=2,
                read_threads=-1, trim_text=True, caption_field="caption", cache_frozen=False,
                bad_window=1000, max_image_pixels=89_478_485,
                naflex=dict(lengths=(), token_budget=0))
  c.batch_size = 64            # global, over all hosts and devices
  c.total_steps = 300
  # name: the optax optimizer (clipjax/train/optim.py OPTIMIZERS): adamw, lion, adafactor,
  # muon (Newton–Schulz on matrices, AdamW on the other leaves) or sgd (momentum b1).
  c.optim = dict(name="adamw", lr=5e-4, warmup_steps=30, weight_decay=0.2, b1=0.9, b2=0.98,
                 eps=1e-6,
                 grad_clip_norm=1.0,
                 # > 0: an average of the trained weights, evaluated and exported (export/ema)
                 # beside them; ema_warmup: timm's warm-up of the decay (clipjax/train/ema.py)
                 ema_decay=0.0, ema_warmup=False,
                 accum_steps=1)  # > 1: GradCache sub-batches, every negative kept (step.py)
  c.freeze = ()                # regexes on parameter paths (e.g. "^clip/visual/")
  # rank > 0: LoRA adapters (clipjax/models/lora.py) on the Dense kernels matching `targets`
  # (regexes on parameter paths, like freeze; empty: attention q/k/v/out and MLP of every
  # tower) and no freeze rule; the pretrained towers are then frozen, the adapters trained and
  # merged into the evaluated and exported weights. alpha / rank scales the update; dropout
  # drops each adapter's input features in training (PEFT's lora_dropout).
  c.lora = dict(rank=0, alpha=16.0, dropout=0.0, targets=(), seed=0)
  # What every method's global loss shares; the method's own settings (weights, form,
  # temperature, ...) are its block config.<method> (clipjax/methods/<method>.py `settings`).
  # block_size > 0: the tiled loss path with this many keys per tile. exchange: how each device
  # sees the other devices' rows, "all_gather" (the whole global batch on every device), "ring"
  # (shards passed round the mesh with ppermute: the loss's memory follows the device's rows,
  # not the global batch; clipjax/losses/ring.py; every loss but distillation's) or "auto": the
  # ring from a global batch of 32,768 on where the loss has one (docs/losses.md).
  c.loss = dict(block_size=0, exchange="auto")
  # fsdp > 1 splits parameters (and optimizer state) matching fsdp_rules with at least
  # fsdp_min_size elements over that many devices (clipjax/parallel/sharding.py).
  c.mesh = dict(data=-1, fsdp=1, fsdp_rules=(".*",), fsdp_min_size=2**14)
  # Multi-host without a TPU's auto-discovery (GPU clusters, local processes).
  c.distributed = dict(coordinator_address="", num_processes=1, process_id=0)
  c.checkpoint = dict(every=100, keep=2)
  c.log_every = 10
  c.eval = eval_block()
  c.export = dict(openclip=True, hf=True, wise_beta=0.9)
  c.base = None                # the config of a base model trained first when no checkpoint
  return c


def adaptation_run(c: ml_collections.ConfigDict, arch: str = "") -> ml_collections.ConfigDict:
  """A short, low learning-rate run adapting a pretrained CLIP (draft, three_tower). With a
  real architecture the weights come from model.checkpoint, so no base is pretrained."""
  c.total_steps = 80
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 10
  if arch:
    c.model.arch = arch
    c.base = None
  return c


def choice(name: str, value: Any, choices) -> None:
  """ConfigError naming the field, the choices and the closest one, for a value not in them."""
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    raise ConfigError(f"{name}={value!r} is not one of {list(choices)}"
                      + (f" (did you mean {close[0]!r}?)" if close else ""))
