"""DRAFT (seed 001 §4.4, methods.md §3): the text tower of a pretrained CLIP adapted to dialogue.
The image tower stays frozen; captions and dialogues go through the same text tower, trained
with a·CE(I, T(caption)) + (1−a)·CE(I, T(dialogue)) plus an RBF-kernel MMD between the caption
and dialogue embeddings. Evaluation compares the base, DRAFT and their text-embedding blend;
the WiSE-FT weight blend (β = export.wise_beta) is evaluated and exported too. On a SigLIP
base, draft.form=sigmoid scores each text–image term with the base's frozen t and b
(docs/methods.md §7b)."""
from __future__ import annotations

import jax.numpy as jnp

from clipjax import losses
from clipjax.config import choice
from clipjax.evaluate.blending import blend_params
from clipjax.evaluate.embed import clip_encoders
from clipjax.methods.base import Method, pretrained_clip_base, register
from clipjax.methods.context import (
  Evaluation,
  embed_image,
  embed_image_text,
  encode_text,
  logit_bias,
  logit_scale,
  same_image_labels,
)
from clipjax.parallel.mesh import on_mesh


@register
class Draft(Method):
  name = "draft"
  loss_functions = (losses.draft_loss,)
  text_fields = ("caption", "dialogue")
  caches_frozen_images = True
  adapts_pretrained = True
  loss_forms = ("softmax", "sigmoid")
  settings = {
      "a": 0.65,            # weight of CE(I, T(caption)); CE(I, T(dialogue)) gets 1 − a
      "mmd_weight": 1.0,    # weight of the caption–dialogue MMD (0: contrastive terms only)
      # The MMD estimator (docs/methods.md §4): "rff" (random Fourier features), "exact" or
      # "subsample" (exact on subsample_size rows); squared: MMD² instead of MMD;
      # multi_kernel: a sum over bandwidths around the median heuristic.
      "mmd": {"estimator": "rff", "squared": False, "num_features": 64,
              "subsample_size": 4096, "multi_kernel": False},
      "bidirectional": False, "form": "softmax", "same_image_positives": False,
      "dialogue_mode": "one_qa",
  }

  def configure(self, c):
    # only the text tower trains (a SigLIP base's bias stays frozen with the scale)
    c.freeze = ("^clip/visual/", "^clip/logit_(scale|bias)$")
    c.base = pretrained_clip_base()

  def validate(self, cfg):
    super().validate(cfg)
    choice("draft.mmd.estimator", cfg.settings.mmd.estimator, losses.ESTIMATORS)

  def embed(self, ctx, params, batch):
    if "caption_embedding" in batch or batch["caption"].shape != batch["dialogue"].shape:
      out = embed_image_text(ctx, params, batch)
      out["dialogue"] = encode_text(ctx, params, batch["dialogue"])
      return out
    # Captions and dialogues through the text tower in one pass (the loop's batches give both
    # one length): the tower's weight gradient is then one sum over both streams' rows, which
    # the mesh reduces once, not once per stream. Rows are interleaved ([N, 2, L] -> [2N, L]),
    # so each device's caption and dialogue rows stay its own, and the tower sees a plain
    # [2N, L] batch (a vmap over the two streams batched every matmul: ~12 % slower on CPU).
    n, length = batch["caption"].shape
    ids = jnp.stack([batch["caption"], batch["dialogue"]], axis=1).reshape(2 * n, length)
    texts = encode_text(ctx, params, ids).reshape(n, 2, -1)
    return {"image": embed_image(ctx, params, batch), "caption": texts[:, 0],
            "dialogue": texts[:, 1]}

  def loss(self, ctx, params, emb, batch, key):
    cfg = ctx.cfg
    out, aux = on_mesh(losses.draft_loss, ctx.mesh)(
        emb["image"], emb["caption"], emb["dialogue"], logit_scale(params), key=key, a=cfg.a,
        mmd_weight=cfg.mmd_weight, mmd=losses.MMDConfig(**cfg.mmd),
        logit_bias=logit_bias(params), options=ctx.loss, **same_image_labels(ctx, batch))
    return out, dict(aux)

  def evaluate(self, model, params, base_params, cfg):
    beta = cfg.export.wise_beta
    wise = blend_params(base_params, params["clip"], beta)
    return Evaluation(
        models={"base": clip_encoders(model, base_params),
                "draft": clip_encoders(model, params["clip"]),
                f"wise_beta={beta}": clip_encoders(model, wise)},
        blend=("base", "draft"), exports={"wise": (f"wise_beta{beta}", wise)})
