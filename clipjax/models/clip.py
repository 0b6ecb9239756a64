"""The two-tower CLIP model with open_clip's parameter layout."""
from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import CLIPConfig, HFTextConfig, TimmViTConfig
from clipjax.models.hf_text import HFTextTower
from clipjax.models.layers import Dtype
from clipjax.models.resnet import ModifiedResNet
from clipjax.models.text import TextTransformer, attach_text_tower, run_text_tower
from clipjax.models.timm_vit import TimmVisionTower
from clipjax.models.vision import VisionTransformer


def l2_normalize(x: jax.Array) -> jax.Array:
  """[..., D] rows divided by their L2 norm (open_clip's `F.normalize` without its epsilon:
  a zero embedding is a bug to surface, not to hide)."""
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class CLIP(nn.Module):
  """`encode_image` / `encode_text` return unnormalised projections, like open_clip's.

  Params: `visual/...` (a timm trunk under `visual/trunk/`), the text tower at the top
  level (under `text/` for open_clip's CustomTextCLIP: HF text towers and SigLIP), `logit_scale`
  (a log, init log(1/0.07)) and, when `cfg.init_logit_bias` is set, `logit_bias`.
  """
  cfg: CLIPConfig
  dtype: Dtype = jnp.float32
  remat: bool | str = False  # False, True or a jax checkpoint policy name (layers.REMAT_POLICIES)
  # The attention kernel (layers.ATTENTION_KERNELS): "auto" = cuDNN flash attention on GPUs in
  # bfloat16 / float16, XLA elsewhere. HF text towers always use XLA (their padding and T5
  # position biases are additive biases, outside what the cuDNN path takes).
  attention: str = "auto"
  # Every transformer tower's blocks under one nn.scan (parameters stacked on a leading layer
  # axis; `models.stacking` converts to and from open_clip's per-block layout). ResNet towers
  # stay unrolled.
  scan_layers: bool = False
  # Fraction of image patch tokens dropped per image in training (FLIP / open_clip's
  # PatchDropout; ViT and SigLIP towers): active only when applied with rngs={"patch_dropout":
  # key}, so evaluation and export never drop anything.
  patch_dropout: float = 0.0

  def setup(self):
    cfg, att, scan = self.cfg, self.attention, self.scan_layers
    if isinstance(cfg.vision, TimmViTConfig):
      self.visual = TimmVisionTower(cfg.vision, cfg.embed_dim, self.dtype, self.remat, att, scan,
                                    self.patch_dropout)
    elif cfg.vision.is_resnet:
      self.visual = ModifiedResNet(cfg.vision, cfg.embed_dim, self.dtype, self.remat, att)
    else:
      self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu, self.dtype,
                                      self.remat, att, scan, self.patch_dropout)
    if isinstance(cfg.text, HFTextConfig):  # open_clip's CustomTextCLIP: params under `text/`
      self.text = HFTextTower(cfg.text, cfg.embed_dim, self.dtype, self.remat, scan)
    elif cfg.custom_text:
      self.text = TextTransformer(cfg.text, cfg.embed_dim, cfg.quick_gelu, self.dtype, self.remat,
                                  att, scan)
    else:
      attach_text_tower(self, cfg.text, cfg.embed_dim, cfg.quick_gelu, self.dtype, self.remat,
                        att, scan)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())
    if cfg.init_logit_bias is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(cfg.init_logit_bias), ())

  def encode_image(self, images: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
    """images: [N, H, W, 3] float (normalised, NHWC), or for a NaFlex tower the dict of
    `clipjax.models.naflex` (transformers' Siglip2ImageProcessor arrays) -> [N, embed_dim]
    float32."""
    return self.visual(images)

  def encode_text(self, ids: jax.Array) -> jax.Array:
    """ids: int [N, L] -> [N, embed_dim] float32."""
    if self.cfg.text_prefix:
      return self.text(ids)
    return run_text_tower(self, ids, self.cfg.text, self.dtype)

  def __call__(self, images: jax.Array, ids: jax.Array):
    """Returns (image_emb, text_emb, logit_scale) — embeddings not normalised."""
    return self.encode_image(images), self.encode_text(ids), self.logit_scale
