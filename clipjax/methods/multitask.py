"""jina-style multi-task training (seed 000, methods.md §5): every step sums a text–text InfoNCE
(fixed τ = multitask.tau; InfoNCE+ with hard negatives when the text records carry them) and the
CLIP loss on an image–caption batch, in one backward pass. The two streams have their own
batch sizes (batch_size, data.text_batch_size); configs/multitask.py chains the three stages."""
from __future__ import annotations

import ml_collections

from clipjax import losses
from clipjax.data.builder import check_source_spec, synthetic
from clipjax.errors import ConfigError
from clipjax.methods.base import Method, method_config, register
from clipjax.methods.context import embed_image_text, encode_text, logit_scale, same_image_labels
from clipjax.parallel.mesh import on_mesh


@register
class MultiTask(Method):
  name = "multitask"
  loss_functions = (losses.text_infonce, losses.clip_loss)
  text_pair_fields = ("query", "positive", "negatives")
  settings = {"tau": 0.05}  # the text–text InfoNCE temperature (fixed)

  def configure(self, c):
    # The text–text stream: records with query / positive / negatives (the synthetic scenes
    # give caption, paraphrase and a one-attribute-swap hard negative).
    c.data.text = synthetic(20_000)
    c.data.text_batch_size = 128
    c.data.num_negatives = 0
    c.eval.tasks = "retrieval"

  def validate(self, cfg):
    super().validate(cfg)
    if cfg.data.text is None or cfg.data.text_batch_size is None:
      raise ConfigError("multitask reads a second stream of text records: set data.text (a "
                        "source spec) and data.text_batch_size")
    check_source_spec(cfg.data.text, "data.text")

  def embed(self, ctx, params, batch):
    text = batch["text"]
    out = {"query": encode_text(ctx, params, text["query"]),
           "positive": encode_text(ctx, params, text["positive"])}
    if "negatives" in text:
      n, m, length = text["negatives"].shape
      out["negatives"] = encode_text(ctx, params, text["negatives"].reshape(n * m, length)
                                     ).reshape(n, m, -1)
    return {"text": out, "image_text": embed_image_text(ctx, params, batch["image_text"])}

  def loss(self, ctx, params, emb, batch, key):
    del key
    text, pairs, scale = emb["text"], emb["image_text"], logit_scale(params)
    negatives = {"negatives": text["negatives"]} if "negatives" in text else {}
    tt = on_mesh(losses.text_infonce, ctx.mesh)(text["query"], text["positive"],
                                                tau=ctx.cfg.tau, options=ctx.loss,
                                                **negatives)
    ti = on_mesh(losses.clip_loss, ctx.mesh)(pairs["image"], pairs["caption"], scale,
                                             options=ctx.loss,
                                             **same_image_labels(ctx, batch["image_text"]))
    return tt + ti, {"text_text": tt, "text_image": ti, "scale": scale}


def stage_config(stage: int, arch: str = "") -> ml_collections.ConfigDict:
  """The config of jina-style stage 1, 2 or 3 (configs/multitask.py, the study):
  1: text pairs + short captions; 2: text pairs + long captions, context 128 (positions
  interpolated from 77); 3: text triplets (one hard negative each) + long captions.
  Without `arch`, stages 2 and 3 chain their earlier stages as `config.base`."""
  if stage not in (1, 2, 3):
    raise ConfigError(f"multitask stage must be 1, 2 or 3, got {stage}")
  c = method_config("multitask")  # the text-pair stream, tau, retrieval evaluation
  c.stage = stage
  c.model.arch = arch
  c.total_steps = 300 if stage == 1 else 100
  c.optim.lr = 1e-3 if stage == 1 else 3e-4
  c.optim.warmup_steps = 30 if stage == 1 else 10
  c.data.num_negatives = 1 if stage == 3 else 0
  c.data.caption_field = "caption" if stage == 1 else "long_caption"
  c.model.context_length = 0 if stage == 1 else 128
  if stage > 1 and not arch:
    c.base = stage_config(stage - 1)
    c.base.export.hf = False
  return c
