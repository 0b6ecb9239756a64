"""Distillation from a frozen teacher (open_clip's `DistillClipLoss`, docs/methods.md §7c): the
student (the run's model, from scratch or `model.checkpoint`) trains with the CLIP loss plus
the cross-entropy of its logit rows to the teacher's softmax rows, both directions, over the
global batch. The teacher is any name `clipjax.load_openclip` takes (`distill.teacher`), kept
frozen under `teacher/`. It either reads the student's batch in the step, and must then take
the same image size and token ids (one tokenizer and context length, e.g. the OpenAI / LAION
CLIP family), or (`distill.cached`) embeds every training image and caption once before
training with its own preprocessing and tokenizer (clipjax/train/frozen_cache.py): any
teacher, SigLIP included, and no teacher forward (nor its weights on the devices) in the step;
this needs `data.augment=False`, since a cached embedding is of the unaugmented image."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from clipjax import losses
from clipjax.convert.load import load_openclip
from clipjax.errors import ConfigError
from clipjax.methods.base import Method, register
from clipjax.methods.context import embed_image_text, logit_scale
from clipjax.models.clip import l2_normalize
from clipjax.parallel.mesh import on_mesh


@functools.lru_cache(maxsize=2)
def load_teacher(name: str, pretrained: str = "", arch: str = ""):
  """(CLIP module, params) of the teacher, read once per process."""
  return load_openclip(name, pretrained or None, arch=arch or None)


def _teacher(block):
  return load_teacher(block.teacher, block.teacher_pretrained, block.teacher_arch)


@register
class Distill(Method):
  name = "distill"
  extra_towers = ("teacher",)
  loss_functions = (losses.distill_loss,)  # no tiles, no ring (clipjax/losses/distill.py)
  settings = {"teacher": "",             # any name load_openclip takes, e.g. ViT-L-14
              "teacher_pretrained": "",  # its pretrained tag (e.g. laion2b_s32b_b82k)
              "teacher_arch": "",        # its architecture, when the name does not say it
              "cached": False}           # embeddings computed once (see above)

  def configure(self, c):
    c.freeze = ("^teacher/",)

  def validate(self, cfg):
    super().validate(cfg)
    if not cfg.settings.teacher:
      raise ConfigError("distill.teacher is empty: name the teacher's weights, e.g. "
                        "--config.distill.teacher=ViT-L-14 "
                        "--config.distill.teacher_pretrained=laion2b_s32b_b82k")
    if "^teacher/" not in tuple(cfg.freeze):
      raise ConfigError(f"distill keeps the teacher frozen: freeze must include '^teacher/', "
                        f"got {tuple(cfg.freeze)}")
    if cfg.settings.cached and (cfg.data.augment or cfg.data.cache_frozen):
      raise ConfigError("distill.cached embeds each image once, unaugmented: set "
                        "data.augment=False (and data.cache_frozen=False: the student trains)")

  def validate_model(self, cfg, model_cfg):
    super().validate_model(cfg, model_cfg)
    teacher = _teacher(cfg.settings)[0].cfg
    if cfg.settings.cached:
      return  # the teacher reads its own preprocessing of the data
    mine = (model_cfg.vision.image_size, model_cfg.text.context_length,
            model_cfg.text.vocab_size, model_cfg.text.tokenizer_dir)
    theirs = (teacher.vision.image_size, teacher.text.context_length, teacher.text.vocab_size,
              teacher.text.tokenizer_dir)
    if mine != theirs:
      raise ConfigError(f"distill.teacher {cfg.settings.teacher} reads images of "
                        f"{theirs[0]} px and {theirs[1]}-token ids of vocabulary {theirs[2]} "
                        f"({theirs[3] or 'CLIP BPE'}); the student's are {mine[0]} px, "
                        f"{mine[1]} tokens, {mine[2]} ({mine[3] or 'CLIP BPE'}): they must "
                        f"agree, or set distill.cached=True")
    if model_cfg.text.trimmable and not teacher.text.trimmable and cfg.data.trim_text:
      raise ConfigError("the teacher's text tower reads the padding: set data.trim_text=False")

  def cached_teacher(self, cfg):
    return _teacher(cfg.settings) if cfg.settings.cached else None

  def init_params(self, model, clip_params, cfg):
    teacher = _teacher(cfg.settings)[1]
    if cfg.settings.cached:  # the loss needs its temperature only
      teacher = {"logit_scale": teacher["logit_scale"]}
    # copies: the step donates its state, and load_teacher's arrays are kept for later runs
    return {"teacher": jax.tree.map(lambda x: jnp.array(x, copy=True), teacher)}

  def embed(self, ctx, params, batch):
    out = embed_image_text(ctx, params, batch)
    if "teacher_image_embedding" in batch:
      out["teacher_image"] = batch["teacher_image_embedding"].astype(jnp.float32)
      out["teacher_caption"] = batch["teacher_caption_embedding"].astype(jnp.float32)
      return out
    teacher = _teacher(ctx.cfg)[0]
    pixels = teacher.cfg.image_preprocess.normalize_on_device(batch["image"])
    apply = lambda x, method: l2_normalize(teacher.apply({"params": params["teacher"]}, x,
                                                         method=method))
    out["teacher_image"] = apply(pixels, teacher.encode_image)
    out["teacher_caption"] = apply(batch["caption"], teacher.encode_text)
    return out

  def loss(self, ctx, params, emb, batch, key):
    del batch, key
    scale = logit_scale(params)
    out, aux = on_mesh(losses.distill_loss, ctx.mesh)(
        emb["image"], emb["caption"], scale, emb["teacher_image"], emb["teacher_caption"],
        jnp.exp(params["teacher"]["logit_scale"]))
    return out, dict(aux, scale=scale)
