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

A method owns its settings: `settings` is the block `config.<name>` (e.g. `draft.a`,
`draft.mmd.*`), added by `method_config`, checked by `validate` and handed to `embed` / `loss`
as `ctx.cfg`; a run's config holds no other method's block. `MOVED_FIELDS` names where the
fields of the previous layout (`loss.a`, `data.dialogue_mode`, ...) are now.

Parameters are `{"clip": CLIP params}` plus the method's own towers (`init_params`).
Image–text batches hold `{"image", "caption", "image_id", "label", ...}`; the frozen-tower
cache replaces `image` / `caption` with unit `image_embedding` / `caption_embedding` rows.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from clipjax.config import DEFAULT_ARCH, base_config
from clipjax.data.streams import StreamPlan
from clipjax.errors import ConfigError
from clipjax.evaluate.embed import Encoders, clip_encoders
from clipjax.models import CLIP
from clipjax.models.clip import l2_normalize
from clipjax.models.lora import applying_lora, lora_variables, merge_lora

Embeddings = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Context:
  """What `embed` and `loss` close over: the model, the device mesh, the method's settings
  (`config.<method>`), the keys per tile of the tiled loss path (None = the dense matrix,
  `config.loss.block_size`) and the exchange of the other devices' rows, in a training step
  the step's key for the towers' own
  randomness (patch and LoRA dropout; None elsewhere), and the LoRA settings (None: off)."""
  model: CLIP
  mesh: Mesh
  cfg: Any
  block_size: int | None = None
  key: jax.Array | None = None
  lora: LoraSettings | None = None
  exchange: str = "all_gather"  # all_gather | ring (losses/ring.py; `resolve_exchange`)

  @property
  def loss_options(self) -> dict[str, Any]:
    """How the global-batch losses see the other devices' rows: tiles and exchange."""
    return {"block_size": self.block_size, "exchange": self.exchange}


@dataclasses.dataclass(frozen=True)
class LoraSettings:
  """`lora.alpha / lora.rank` and `lora.dropout` of a run with adapters."""
  scale: float
  dropout: float = 0.0

  @classmethod
  def of(cls, lora) -> LoraSettings | None:
    if not lora or not lora.rank:
      return None
    return cls(lora.alpha / lora.rank, lora.get("dropout", 0.0))


@dataclasses.dataclass(frozen=True)
class Objective:
  """A method bound to a model and mesh, as the train step uses it. `embed(params, batch,
  key=None)`: with a key, the towers draw their training randomness from it."""
  embed: Callable[..., Embeddings]
  loss: Callable[[Any, Embeddings, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

  def loss_fn(self, params, batch, key):
    """The whole objective: loss(params, embed(params, batch, key), batch, key)."""
    return self.loss(params, self.embed(params, batch, key), batch, key)


@dataclasses.dataclass
class Evaluation:
  """The models evaluated side by side after training, the pair whose text embeddings are
  blended (`config.eval.betas`), and extra exports: name -> (subdirectory, CLIP params)."""
  models: dict[str, Encoders]
  blend: tuple[str, str] | None = None
  exports: dict[str, tuple[str, Any]] = dataclasses.field(default_factory=dict)


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
  # The loss takes `loss.block_size` (tiled logits) and the ring exchange; False: it forms
  # the whole [local, global] logits with one all-gather, and both settings are refused.
  blockwise_loss: bool = True
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

  def stream_plan(self, cfg: ml_collections.ConfigDict) -> StreamPlan:
    """What this method reads, for `clipjax.data.streams.training_streams`."""
    return StreamPlan(self.text_fields, self.own(cfg).get("dialogue_mode") == "one_qa",
                      self.text_pair_fields)

  def validate(self, cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a config this method cannot train (before any model init)."""
    if self.adapts_pretrained and not cfg.model.checkpoint and not cfg.get("base"):
      raise ConfigError(f"{self.name} adapts a pretrained CLIP: set model.checkpoint (a file, "
                        f"hf-hub:ORG/REPO, or ARCH with model.pretrained) or config.base")
    own = self.own(cfg)
    if "form" in self.settings:
      choice(f"{self.name}.form", own.form, self.loss_forms)
      if own.form == "sigmoid" and own.get("bidirectional"):
        raise ConfigError(f"{self.name}.bidirectional has no meaning with {self.name}.form="
                          f"'sigmoid' (the sigmoid loss scores every pair once, whichever "
                          f"side is the query)")
    if "dialogue_mode" in self.settings:
      choice(f"{self.name}.dialogue_mode", own.dialogue_mode, ("one_qa", "concat"))

  def validate_model(self, cfg: ml_collections.ConfigDict, model_cfg) -> None:
    """Raises ConfigError when the architecture (resolved from the checkpoint) cannot be
    trained by this config: the sigmoid form needs a model with a logit bias."""
    if self.own(cfg).get("form") == "sigmoid" and model_cfg.init_logit_bias is None:
      source = cfg.model.checkpoint or cfg.model.arch or f"the default {DEFAULT_ARCH}"
      raise ConfigError(f"{self.name}.form='sigmoid' needs a SigLIP base with a logit_bias "
                        f"(docs/methods.md §7b); {source} has none: set model.checkpoint to a "
                        f"SigLIP model, e.g. --config.model.checkpoint=ViT-B-16-SigLIP2 "
                        f"--config.model.pretrained=webli")

  def own(self, cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """This method's block of a run's config (`config.<name>`; empty without settings)."""
    return cfg.get(self.name) or ml_collections.ConfigDict()

  def cached_teacher(self, cfg) -> tuple[CLIP, dict] | None:
    """(model, params) of a frozen model whose unit embeddings of every training image and
    caption are computed once, with its own preprocessing and tokenizer, and fed beside the
    batch as `teacher_image_embedding` / `teacher_caption_embedding`; None: no such model."""
    del cfg
    return None

  def init_params(self, model: CLIP, clip_params: dict, cfg) -> dict:
    """The method's own parameter trees, by name (see `extra_towers`)."""
    del model, clip_params, cfg
    return {}

  def embed(self, ctx: Context, params: dict, batch: dict) -> Embeddings:
    return embed_image_text(ctx, params, batch)

  def loss(self, ctx: Context, params: dict, emb: Embeddings, batch: dict, key: jax.Array):
    raise NotImplementedError(f"method {self.name!r} defines no loss")

  def evaluate(self, model: CLIP, params: dict, base_params: dict | None, cfg) -> Evaluation:
    """What to evaluate and export besides the trained CLIP itself."""
    del base_params, cfg
    return Evaluation({self.name: clip_encoders(model, params["clip"])})

  def objective(self, model: CLIP, mesh: Mesh, cfg: ml_collections.ConfigDict) -> Objective:
    """The method's embed / loss pair for a run's config (with LoRA, the towers apply the
    adapters `params["lora"]` beside their frozen kernels: `apply_tower`)."""
    loss = cfg.get("loss", {})
    ctx = Context(model, mesh, self.own(cfg), loss.get("block_size") or None,
                  lora=LoraSettings.of(cfg.get("lora")),
                  exchange=resolve_exchange(cfg))
    return Objective(lambda p, b, k=None: self.embed(dataclasses.replace(ctx, key=k), p, b),
                     lambda p, e, b, k: self.loss(ctx, p, e, b, k))


# The exchange of the other devices' rows (losses/ring.py, docs/losses.md).

# `loss.exchange=auto` sends shards round the ring from this global batch on: below it the
# gathered keys and their gradient take at most ~2·B·D·4 bytes (a quarter GiB at D = 1024)
# per device, less than the towers' activations, and one gather is the least work; above it
# they grow with the whole batch whatever the number of chips (docs/scaling.md).
RING_FROM_BATCH = 32_768


def ring_unavailable(cfg) -> str:
  """Why a run's loss has no ring exchange or tiling ("" when it has them)."""
  if not get_method(cfg.method).blockwise_loss:
    return f"for {cfg.method} (its loss forms the whole logits of the gathered batch)"
  return ""


def resolve_exchange(cfg) -> str:
  """`loss.exchange` as the losses take it: "auto" is the ring from `RING_FROM_BATCH` global
  rows on where the method's loss has one, else the all-gather."""
  exchange = cfg.get("loss", {}).get("exchange", "auto")
  if exchange != "auto":
    return exchange
  big = cfg.get("batch_size", 0) >= RING_FROM_BATCH
  return "ring" if big and not ring_unavailable(cfg) else "all_gather"


# Shared pieces of embed / loss.

def with_lora_merged(params: dict, lora=None) -> dict:
  """`params` with the LoRA adapters `params["lora"]` merged into the weights they adapt (as
  they are without adapters)."""
  if "lora" not in params:
    return params
  return merge_lora({k: v for k, v in params.items() if k != "lora"}, params["lora"],
                    lora.alpha / lora.rank)


def apply_tower(ctx: Context, params: dict, tower: str, module: nn.Module, *args,
                rngs: dict | None = None, **kwargs):
  """`module.apply` with the weights `params[tower]` and, in a LoRA run, the tower's adapters
  (models/lora.py; with lora.dropout, dropped from the step's key in training)."""
  variables = {"params": params[tower]}
  if ctx.lora is None or "lora" not in params:
    return module.apply(variables, *args, rngs=rngs, **kwargs)
  variables["lora"] = lora_variables(params["lora"], tower)
  if ctx.lora.dropout and ctx.key is not None:
    rngs = dict(rngs or {}, lora_dropout=jax.random.fold_in(ctx.key, 2))
  with applying_lora(ctx.lora.scale, ctx.lora.dropout):
    return module.apply(variables, *args, rngs=rngs, **kwargs)


def encode_text(ctx: Context, params: dict, ids: jax.Array) -> jax.Array:
  """[N, L] token ids -> [N, D] unit embeddings of the CLIP text tower."""
  return l2_normalize(apply_tower(ctx, params, "clip", ctx.model, ids,
                                  method=ctx.model.encode_text))


def embed_image(ctx: Context, params: dict, batch: dict) -> jax.Array:
  """[N, D] unit image embeddings of the batch's images (or its cached ones), with patch
  dropout from the step's key in training."""
  if "image_embedding" in batch:
    return batch["image_embedding"]
  pixels = ctx.model.cfg.image_preprocess.normalize_on_device(batch["image"])
  rngs = ({"patch_dropout": jax.random.fold_in(ctx.key, 1)}
          if ctx.key is not None and ctx.model.patch_dropout else None)
  return l2_normalize(apply_tower(ctx, params, "clip", ctx.model, pixels, rngs=rngs,
                                  method=ctx.model.encode_image))


def embed_image_text(ctx: Context, params: dict, batch: dict) -> Embeddings:
  """{"image": [N, D], "caption": [N, D]} unit embeddings (or the cached ones, float32 as the
  towers' outputs in every compute dtype)."""
  if "caption_embedding" in batch:
    caption = batch["caption_embedding"]
  else:
    caption = encode_text(ctx, params, batch["caption"])
  return {"image": embed_image(ctx, params, batch), "caption": caption}


def logit_scale(params: dict) -> jax.Array:
  return jnp.exp(params["clip"]["logit_scale"])


def logit_bias(params: dict) -> jax.Array | None:
  """The SigLIP bias b, or None for a model without one."""
  return params["clip"].get("logit_bias")


def same_image_labels(ctx: Context, batch: dict) -> dict:
  """`labels=image_id` when captions of one image are all positives (`same_image_positives`)."""
  if not ctx.cfg.get("same_image_positives"):
    return {}
  return {"labels": batch["image_id"].astype(jnp.int32)}


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


def method_config(name: str) -> ml_collections.ConfigDict:
  """The training defaults with method `name`'s own (what configs/NAME.py starts from):
  `base_config`, the block `config.<name>` from its `settings`, then its `configure`."""
  c = base_config(name)
  method = get_method(name)
  if method.settings:
    c[name] = ml_collections.ConfigDict(method.settings)
  method.configure(c)
  return c


def choice(name: str, value: Any, choices) -> None:
  """ConfigError naming the field, the choices and the closest one, for a value not in them."""
  if value not in choices:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    raise ConfigError(f"{name}={value!r} is not one of {list(choices)}"
                      + (f" (did you mean {close[0]!r}?)" if close else ""))


# The previous layout (every method's settings in every run, clipjax before issue 26):
# old dotted field -> its name in the block of the methods that read it.
MOVED_FIELDS = {"loss.a": "a", "loss.b": "b", "loss.mmd_weight": "mmd_weight",
                "loss.mmd": "mmd", "loss.tau": "tau", "loss.mult": "tower",
                "loss.bidirectional": "bidirectional", "loss.form": "form",
                "loss.same_image_positives": "same_image_positives",
                "data.dialogue_mode": "dialogue_mode"}


def moved_field(field: str, method: str | None = None) -> tuple[str, str | None] | None:
  """For a dotted field of the previous layout (or below one): a one-line message saying where
  it is now, and its new dotted name in `method`'s block (None: that method has no such
  setting). None for any other field."""
  old = next((k for k in MOVED_FIELDS if field == k or field.startswith(k + ".")), None)
  if old is None:
    return None
  rest = MOVED_FIELDS[old] + field[len(old):]
  owners = [n for n, m in _REGISTRY.items() if MOVED_FIELDS[old] in m.settings]
  if method in owners:
    return (f"{field} is now {method}.{rest} (each method's settings are in its own block, "
            f"config.<method>; docs/training.md)", f"{method}.{rest}")
  where = ", ".join(f"{n}.{rest}" for n in owners)
  return (f"{field} is now a method's own setting ({where})"
          + (f"; method {method} has none" if method else ""), None)


def check_layout(cfg: ml_collections.ConfigDict) -> None:
  """ConfigError naming the new field for a config written for the previous layout."""
  for old in MOVED_FIELDS:
    parent, _, leaf = old.rpartition(".")
    if leaf in (cfg.get(parent) or {}):
      raise ConfigError(moved_field(old, cfg.get("method"))[0])


def pretrained_clip_base(steps: int = 150) -> ml_collections.ConfigDict:
  """`config.base` of the methods that adapt a pretrained CLIP, when no checkpoint is given:
  a small CLIP pretrained on the synthetic captions (without evaluation or HF export)."""
  c = method_config("clip")
  c.total_steps = steps
  c.optim.lr = 1e-3
  c.eval = None
  c.export.hf = False
  return c
