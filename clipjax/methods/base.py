"""What every training method is made of, and the registry that finds one by name.

A method (docs/methods.md §1–7) is one `Method` subclass in its own file under `clipjax/methods/`,
registered with `@register`. `clipjax.main` and `clipjax.train` only ever call the hooks
below, so a method reads top to bottom in its file; adding one is that file, its import in
`clipjax/methods/__init__.py` and a config (docs/architecture.md walks through an example).

The objective is split in two so that gradient accumulation keeps every negative (GradCache,
see `clipjax.train.step`):
  embed(ctx, params, batch) -> embeddings   row-wise: output row i depends on input row i only;
                                            a pytree shaped like the batch's streams;
  loss(ctx, params, embeddings, batch, key) -> (scalar, logged terms)
                                            the global-batch loss; reads only scalars (logit
                                            scale / bias) from params and labels from the batch.
Towers run under `jit` on batch-sharded global arrays; losses under `shard_map` (`on_mesh`)
with all-gathered negatives.

The hooks read a run's typed options (`clipjax.options.RunOptions`, from `run_options`). A
method owns its settings: `settings` is the block `config.<name>` (e.g. `draft.a`,
`draft.mmd.*`), added by `method_config`, read as `RunOptions.settings` (its defaults under the
config's values), checked by `validate` and handed to `embed` / `loss` as `ctx.cfg`; a run's
config holds no other method's block (`methods/layout.py` names where the fields of the
previous layout are now). `methods/context.py` has what `embed` and `loss`
close over and the tower helpers every method shares.

Parameters are `{"clip": CLIP params}` plus the method's own towers (`init_params`).
Image–text batches hold `{"image", "caption", "image_id", "label", ...}`; the frozen-tower
cache replaces `image` / `caption` with unit `image_embedding` / `caption_embedding` rows.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
from jax.sharding import Mesh

from clipjax import losses
from clipjax.config import DEFAULT_ARCH, base_config, choice
from clipjax.data.streams import StreamPlan
from clipjax.errors import ConfigError
from clipjax.evaluate.embed import clip_encoders
from clipjax.evaluate.tasks import eval_options
from clipjax.methods.context import (
  Context,
  Embeddings,
  Evaluation,
  LoraSettings,
  Objective,
  embed_image_text,
)
from clipjax.models import CLIP
from clipjax.options import RunOptions


class Method:
  """The default hooks are plain two-tower CLIP on image–caption batches."""
  name: str = ""
  # config.<name>: the method's own settings and their defaults, each documented where the
  # subclass sets it. Shared keys mean the same in every method that has them:
  #   form: "softmax" or "sigmoid" (SigLIP's pairwise sigmoid with the base's logit scale and
  #     bias, docs/methods.md §7b; one of `loss_forms`);
  #   bidirectional: add the key-side (transposed) CE term of every query-side term;
  #   same_image_positives: every caption of one image is a positive (labels = image_id);
  #   dialogue_mode: "one_qa" (one random question–answer pair per sample and epoch) or
  #     "concat" (the whole dialogue in one text).
  settings: dict[str, Any] = {}
  # Token-id fields of the image–text batch (their padding columns are trimmed).
  text_fields: tuple[str, ...] = ("caption",)
  # The token-id fields of a second stream of text records (query / positive / [negatives])
  # from config.data.text, batched by data.text_batch_size; with it, the batch is
  # {"text": text pairs, "image_text": the image–text batch}. Empty: no such stream.
  text_pair_fields: tuple[str, ...] = ()
  # data.cache_frozen may embed each image once (the image tower is frozen) ...
  caches_frozen_images: bool = False
  # ... and each caption once when the whole CLIP text tower is frozen as well.
  caches_frozen_captions: bool = False
  # The global-batch losses `loss` calls (clipjax.losses): every setting of the run's
  # `LossOptions` away from its default must be one each of them reads (`@reads`), else
  # validation refuses it (loss.block_size, loss.exchange=ring, form, bidirectional).
  loss_functions: tuple[Callable, ...] = ()
  # Adapts a pretrained CLIP: needs model.checkpoint or config.base, and the evaluation
  # compares with that base (`evaluate` gets its params).
  adapts_pretrained: bool = False
  # Parameter trees beyond "clip" (their paths exist only after `init_params`).
  extra_towers: tuple[str, ...] = ()
  # The towers holding pretrained weights, which LoRA (lora.rank > 0) adapts and freezes;
  # towers trained from scratch (mult's fusion tower) keep training whole.
  lora_towers: tuple[str, ...] = ("clip",)
  # Values of its `form` setting this method trains with; "sigmoid" (docs/methods.md §7b)
  # needs a SigLIP base.
  loss_forms: tuple[str, ...] = ("softmax",)

  def configure(self, c: ml_collections.ConfigDict) -> None:
    """Sets the method's defaults on a fresh `clipjax.config.base_config`."""

  def text_towers(self) -> dict[str, str]:
    """Token-id field -> the tower that encodes it: "text" (the CLIP text tower) or one of
    `extra_towers` (model FLOPs, `clipjax.train.flops`)."""
    return {f: "text" for f in (*self.text_fields, *self.text_pair_fields)}

  def stream_plan(self, cfg: RunOptions) -> StreamPlan:
    """What this method reads, for `clipjax.data.streams.training_streams`."""
    one_qa = "dialogue_mode" in self.settings and cfg.settings.dialogue_mode == "one_qa"
    return StreamPlan(self.text_fields, one_qa, self.text_pair_fields)

  def validate(self, cfg: RunOptions) -> None:
    """Raises ConfigError for a config this method cannot train (before any model init)."""
    if self.adapts_pretrained and not cfg.model.checkpoint and cfg.base is None:
      raise ConfigError(f"{self.name} adapts a pretrained CLIP: set model.checkpoint (a file, "
                        f"hf-hub:ORG/REPO, or ARCH with model.pretrained) or config.base")
    own = cfg.settings
    if "form" in self.settings:
      choice(f"{self.name}.form", own.form, self.loss_forms)
      try:  # LossOptions refuses the combinations no loss can train (sigmoid + bidirectional)
        loss_options(cfg)
      except ValueError as e:
        raise ConfigError(f"{self.name}.{e}") from None
    if "dialogue_mode" in self.settings:
      choice(f"{self.name}.dialogue_mode", own.dialogue_mode, ("one_qa", "concat"))

  def validate_model(self, cfg: RunOptions, model_cfg) -> None:
    """Raises ConfigError when the architecture (resolved from the checkpoint) cannot be
    trained by this config: the sigmoid form needs a model with a logit bias."""
    if loss_options(cfg).form == "sigmoid" and model_cfg.init_logit_bias is None:
      source = cfg.model.checkpoint or cfg.model.arch or f"the default {DEFAULT_ARCH}"
      raise ConfigError(f"{self.name}.form='sigmoid' needs a SigLIP base with a logit_bias "
                        f"(docs/methods.md §7b); {source} has none: set model.checkpoint to a "
                        f"SigLIP model, e.g. --config.model.checkpoint=ViT-B-16-SigLIP2 "
                        f"--config.model.pretrained=webli")

  def cached_teacher(self, cfg: RunOptions) -> tuple[CLIP, dict] | None:
    """(model, params) of a frozen model whose unit embeddings of every training image and
    caption are computed once, with its own preprocessing and tokenizer, and fed beside the
    batch as `teacher_image_embedding` / `teacher_caption_embedding`; None: no such model."""
    del cfg
    return None

  def init_params(self, model: CLIP, clip_params: dict, cfg: RunOptions) -> dict:
    """The method's own parameter trees, by name (see `extra_towers`)."""
    del model, clip_params, cfg
    return {}

  def embed(self, ctx: Context, params: dict, batch: dict) -> Embeddings:
    return embed_image_text(ctx, params, batch)

  def loss(self, ctx: Context, params: dict, emb: Embeddings, batch: dict, key: jax.Array):
    raise NotImplementedError(f"method {self.name!r} defines no loss")

  def evaluate(self, model: CLIP, params: dict, base_params: dict | None,
               cfg: RunOptions) -> Evaluation:
    """What to evaluate and export besides the trained CLIP itself."""
    del base_params, cfg
    return Evaluation({self.name: clip_encoders(model, params["clip"])})

  def objective(self, model: CLIP, mesh: Mesh, cfg: RunOptions) -> Objective:
    """The method's embed / loss pair for a run's options (with LoRA, the towers apply the
    adapters `params["lora"]` beside their frozen kernels: `apply_tower`)."""
    ctx = Context(model, mesh, cfg.settings, loss_options(cfg), lora=LoraSettings.of(cfg.lora))
    return Objective(lambda p, b, k=None: self.embed(dataclasses.replace(ctx, key=k), p, b),
                     lambda p, e, b, k: self.loss(ctx, p, e, b, k))


# The exchange of the other devices' rows (losses/ring.py, docs/losses.md).

# `loss.exchange=auto` sends shards round the ring from this global batch on: below it the
# gathered keys and their gradient take at most ~2·B·D·4 bytes (a quarter GiB at D = 1024)
# per device, less than the towers' activations, and one gather is the least work; above it
# they grow with the whole batch whatever the number of chips (docs/scaling.md).
RING_FROM_BATCH = 32_768


def resolve_exchange(cfg: RunOptions) -> str:
  """`loss.exchange` as the losses take it: "auto" is the ring from `RING_FROM_BATCH` global
  rows on where every loss of the method reads the exchange, else the all-gather."""
  exchange = cfg.loss.exchange
  if exchange != "auto":
    return exchange
  method = get_method(cfg.method)
  ring = all("exchange" in getattr(f, "reads", ()) for f in method.loss_functions)
  return "ring" if ring and cfg.batch_size >= RING_FROM_BATCH else "all_gather"


def loss_options(cfg: RunOptions) -> losses.LossOptions:
  """The one `LossOptions` a run's losses get: its method's `form` and `bidirectional` (where
  it has them), `loss.block_size` and the resolved `loss.exchange`."""
  own = cfg.settings
  return losses.LossOptions(form=own.form if "form" in own else "softmax",
                            bidirectional=bool("bidirectional" in own and own.bidirectional),
                            block_size=cfg.loss.block_size or None,
                            exchange=resolve_exchange(cfg))


# The registry.

_REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
  """Class decorator: makes `cls()` available as `config.method = cls.name`."""
  if not cls.name:
    raise ValueError(f"{cls.__name__} needs a `name`")
  _REGISTRY[cls.name] = cls()
  return cls


def method_names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get_method(name: str) -> Method:
  if name not in _REGISTRY:
    raise ConfigError(f"method={name!r} is not one of {list(_REGISTRY)}")
  return _REGISTRY[name]


def run_options(cfg: ml_collections.ConfigDict) -> RunOptions:
  """A run's typed options from its ConfigDict (each method block under its `settings`, each
  evaluation task's under the task's). Parses only: `clipjax.train.validate` checks them."""
  if isinstance(cfg, RunOptions):
    return cfg
  return RunOptions.of(cfg, lambda name: get_method(name).settings, eval_options)


def method_config(name: str) -> ml_collections.ConfigDict:
  """The training defaults with method `name`'s own (what configs/NAME.py starts from):
  `base_config`, the block `config.<name>` from its `settings`, then its `configure`."""
  c = base_config(name)
  method = get_method(name)
  if method.settings:
    c[name] = ml_collections.ConfigDict(method.settings)
  method.configure(c)
  return c


def pretrained_clip_base(steps: int = 150) -> ml_collections.ConfigDict:
  """`config.base` of the methods that adapt a pretrained CLIP, when no checkpoint is given:
  a small CLIP pretrained on the synthetic captions (without evaluation or HF export)."""
  c = method_config("clip")
  c.total_steps = steps
  c.optim.lr = 1e-3
  c.eval = None
  c.export.hf = False
  return c
