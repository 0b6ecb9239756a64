"""Export a SigLIP / SigLIP 2 model to a Hugging Face `transformers.SiglipModel` directory.

HF's SigLIP has the same networks under other names: separate q / k / v projections in the
blocks (open_clip's text tower fuses them, timm's trunk fuses them as `qkv`), the MAP head as
`head` with a fused `in_proj` over the probe (timm's separate `q` and `kv`), positions as an
Embedding, and a text `head` Linear that always exists (an identity for towers without a
projection, which is exact). One activation per tower: exact GELU is `gelu`, the tanh form
`gelu_pytorch_tanh`. SigLIP 2 checkpoints of fixed resolution load as SiglipModel too.
"""
from __future__ import annotations

import logging

import numpy as np

from clipjax.convert.io import CheckpointError
from clipjax.models.configs import CLIPConfig, TimmViTConfig

log = logging.getLogger(__name__)

_TEXT_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
               "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
_RENAMES = {  # open_clip key -> SiglipModel key, outside the blocks and the MAP head
    "text.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "text.positional_embedding": "text_model.embeddings.position_embedding.weight",
    "text.ln_final.weight": "text_model.final_layer_norm.weight",
    "text.ln_final.bias": "text_model.final_layer_norm.bias",
    "text.text_projection.weight": "text_model.head.weight",
    "text.text_projection.bias": "text_model.head.bias",
    "visual.trunk.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.trunk.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "visual.trunk.norm.weight": "vision_model.post_layernorm.weight",
    "visual.trunk.norm.bias": "vision_model.post_layernorm.bias",
}
# NaFlex (Siglip2Model): a Linear patch embedding on flattened patches, positions as a grid
_NAFLEX_RENAMES = {
    "visual.trunk.embeds.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.trunk.embeds.proj.bias": "vision_model.embeddings.patch_embedding.bias",
}
_VISION_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1",
                 "mlp.fc2": "mlp.fc2", "attn.proj": "self_attn.out_proj"}


def _qkv(out: dict, base: str, kind: str, value: np.ndarray) -> None:
  for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
    out[f"{base}self_attn.{name}.{kind}"] = part


def _block(out: dict, base: str, rest: str, value: np.ndarray, renames: dict) -> None:
  if rest.startswith(("attn.in_proj_", "attn.qkv.")):
    _qkv(out, base, "weight" if rest.endswith("weight") else "bias", value)
    return
  module, _, leaf = rest.rpartition(".")
  if module not in renames:
    raise CheckpointError(f"no Hugging Face SigLIP name for block tensor {rest}")
  out[f"{base}{renames[module]}.{leaf}"] = value


def siglip_tensors_to_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """open_clip SigLIP tensors -> SiglipModel tensors, each on its own (any subset of a
  state_dict; the MAP head's q / kv, fused in SiglipModel, are left to
  `siglip_state_dict_to_hf`)."""
  out: dict[str, np.ndarray] = {}
  for key, value in sd.items():
    if key in ("logit_scale", "logit_bias"):
      out[key] = np.reshape(value, (1,))
    elif key.startswith("text.transformer.resblocks."):
      layer, rest = key[len("text.transformer.resblocks."):].split(".", 1)
      _block(out, f"text_model.encoder.layers.{layer}.", rest, value, _TEXT_BLOCK)
    elif key.startswith("visual.trunk.blocks."):
      layer, rest = key[len("visual.trunk.blocks."):].split(".", 1)
      _block(out, f"vision_model.encoder.layers.{layer}.", rest, value, _VISION_BLOCK)
    elif key.startswith("visual.trunk.attn_pool."):
      rest = key[len("visual.trunk.attn_pool."):]
      head = "vision_model.head."
      if rest == "latent":
        out[head + "probe"] = value
      elif rest.startswith(("q.", "kv.")):
        continue  # fused by siglip_state_dict_to_hf: in_proj = [q; k; v]
      else:
        module, _, leaf = rest.rpartition(".")
        name = {"proj": "attention.out_proj", "norm": "layernorm"}.get(module, module)
        out[f"{head}{name}.{leaf}"] = value
    else:
      name = _RENAMES.get(key) or _NAFLEX_RENAMES.get(key)
      if key in ("visual.trunk.pos_embed", "visual.trunk.embeds.pos_embed"):  # [1, (G, G,) W]
        out["vision_model.embeddings.position_embedding.weight"] = value.reshape(
            -1, value.shape[-1])
      elif name is None:
        raise CheckpointError(f"no Hugging Face SigLIP name for open_clip tensor {key}")
      else:
        out[name] = value
  return out


def siglip_state_dict_to_hf(sd: dict[str, np.ndarray], cfg: CLIPConfig) -> dict[str, np.ndarray]:
  """open_clip SigLIP state_dict -> HF SiglipModel state_dict."""
  out = siglip_tensors_to_hf(sd)
  for leaf in ("weight", "bias"):
    out[f"vision_model.head.attention.in_proj_{leaf}"] = np.concatenate(
        [sd[f"visual.trunk.attn_pool.q.{leaf}"], sd[f"visual.trunk.attn_pool.kv.{leaf}"]])
  if "text_model.head.weight" not in out:  # proj_type none: an exact identity head
    width = cfg.text.width
    out["text_model.head.weight"] = np.eye(width, dtype=np.float32)
    out["text_model.head.bias"] = np.zeros(width, np.float32)
  return out


def hf_siglip_config(cfg: CLIPConfig):
  """transformers.SiglipConfig for a SigLIP architecture (Siglip2Config for NaFlex)."""
  from transformers import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig, SiglipConfig
  v = cfg.vision
  if not isinstance(v, TimmViTConfig):
    raise CheckpointError("hf_siglip_config needs a SigLIP architecture (a timm trunk)")
  act = lambda tanh: "gelu_pytorch_tanh" if tanh else "gelu"
  if v.naflex:
    vision = dict(hidden_size=v.width, intermediate_size=v.mlp_width,
                  num_hidden_layers=v.layers, num_attention_heads=v.heads,
                  patch_size=v.patch_size, num_patches=v.grid ** 2,
                  hidden_act=act(v.gelu_tanh), layer_norm_eps=1e-6)
    # config objects, not dicts: from dicts transformers first builds (and warns about) its
    # default text config
    return Siglip2Config(text_config=Siglip2TextConfig(**_hf_text_config(cfg)),
                         vision_config=Siglip2VisionConfig(**vision),
                         architectures=["Siglip2Model"])
  return SiglipConfig(
      text_config=_hf_text_config(cfg),
      vision_config=dict(hidden_size=v.width, intermediate_size=v.mlp_width,
                         num_hidden_layers=v.layers, num_attention_heads=v.heads,
                         image_size=v.image_size, patch_size=v.patch_size,
                         hidden_act=act(v.gelu_tanh), layer_norm_eps=1e-6),
      architectures=["SiglipModel"])


def _hf_text_config(cfg: CLIPConfig) -> dict:
  t = cfg.text
  return dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_width,
              num_hidden_layers=t.layers, num_attention_heads=t.heads,
              max_position_embeddings=t.context_length,
              hidden_act="gelu_pytorch_tanh" if t.gelu_tanh else "gelu",
              layer_norm_eps=t.ln_eps, projection_size=cfg.embed_dim,
              pad_token_id=None, bos_token_id=None, eos_token_id=None)


class _ProcessorFiles:
  """The image processor and, when it can be loaded, the model's HF tokenizer, saved together
  (HF's SiglipProcessor files)."""

  def __init__(self, image_processor, tokenizer):
    self.image_processor, self.tokenizer = image_processor, tokenizer

  def save_pretrained(self, path: str) -> None:
    self.image_processor.save_pretrained(path)
    if self.tokenizer is not None:
      self.tokenizer.save_pretrained(path)


def hf_siglip_processor(cfg: CLIPConfig, image_processor=None) -> _ProcessorFiles:
  """SigLIP preprocessing as HF writes it (`cfg.image_preprocess`: squash resize, bicubic,
  mean/std 0.5 for every webli tag), or `image_processor` if given (MetaCLIP 2's CLIP one); the
  tokenizer files of `cfg.text.tokenizer_dir` when that directory or cache name loads (else
  only the image processor, with a warning)."""
  from transformers import AutoTokenizer, Siglip2ImageProcessor, SiglipImageProcessor
  size, pre = cfg.vision.image_size, cfg.image_preprocess
  resample = {"bicubic": 3, "bilinear": 2}[pre.interpolation]
  if image_processor is not None:
    images = image_processor
  elif cfg.vision.naflex:
    images = Siglip2ImageProcessor(patch_size=cfg.vision.patch_size, resample=resample,
                                   max_num_patches=cfg.vision.max_num_patches,
                                   image_mean=list(pre.mean), image_std=list(pre.std))
  elif pre.resize_mode != "squash":
    raise ValueError(f"HF's SiglipImageProcessor only squashes; these weights resize with "
                     f"{pre.resize_mode!r}")
  else:
    images = SiglipImageProcessor(size={"height": size, "width": size}, resample=resample,
                                  image_mean=list(pre.mean), image_std=list(pre.std))
  tokenizer = None
  if cfg.text.tokenizer_dir:
    try:
      tokenizer = AutoTokenizer.from_pretrained(cfg.text.tokenizer_dir, local_files_only=True)
    except (OSError, ValueError):
      log.warning("tokenizer %s not found locally: the HF export has no tokenizer files",
                  cfg.text.tokenizer_dir)
  return _ProcessorFiles(images, tokenizer)
