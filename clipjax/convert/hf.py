"""Export to a Hugging Face `transformers.CLIPModel` directory (config.json + model.safetensors);
MetaCLIP 2's architectures (text pooled at the first `eos_id`) go to `MetaClip2Model`, which has
CLIP's parameter names, and SigLIP's to `SiglipModel` (`hf_siglip.py`).

HF's CLIP splits the fused attention projection into q/k/v, stores projections as Linear
weights, and pools text at the first end-of-text id (the same position as open_clip's argmax
for our tokenizer's output). LayerNorm eps and both activations map one to one.
`hf_model_class` / `hf_export_refusal` say which class an architecture exports to, or why none.
"""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np

from clipjax.convert.hf_siglip import (
  hf_siglip_config,
  hf_siglip_processor,
  siglip_state_dict_to_hf,
)
from clipjax.convert.io import CheckpointError, save_hf_dir
from clipjax.convert.openclip import Params, config_for_params, params_to_state_dict
from clipjax.models.configs import (
  CLIPConfig,
  HFTextConfig,
  TextConfig,
  TimmViTConfig,
  VisionConfig,
)
from clipjax.models.registry import MODEL_CONFIGS
from clipjax.text.tokenizer import EOT_ID, PAD_ID, SOT_ID, _build_bpe, default_bpe_path

_BLOCK_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                  "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
_RENAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "logit_scale": "logit_scale",
}
_PREFIXES = {"visual.ln_pre.": "vision_model.pre_layrnorm.",  # sic: HF's name
             "visual.ln_post.": "vision_model.post_layernorm.",
             "ln_final.": "text_model.final_layer_norm.",
             "visual.transformer.resblocks.": "vision_model.encoder.layers.",
             "transformer.resblocks.": "text_model.encoder.layers."}


def state_dict_to_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """open_clip state_dict -> HF CLIPModel state_dict."""
  out = {}
  for key, value in sd.items():
    if key == "visual.proj":
      out["visual_projection.weight"] = value.T
    elif key == "text_projection":
      out["text_projection.weight"] = value.T
    elif key in _RENAMES:
      out[_RENAMES[key]] = value
    elif key == "logit_bias":
      raise CheckpointError("HF CLIPModel has no logit_bias; SigLIP-style models cannot be "
                            "exported as CLIPModel")
    else:
      prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
      if prefix is None:
        raise CheckpointError(f"no Hugging Face name for open_clip tensor {key}")
      rest = key[len(prefix):]
      if "resblocks" in prefix:
        layer, rest = rest.split(".", 1)
        base = f"{_PREFIXES[prefix]}{layer}."
        if rest.startswith("attn.in_proj_"):
          kind = rest.rsplit("_", 1)[1]  # weight | bias
          for name, part in zip("qkv", np.split(value, 3, axis=0)):
            out[f"{base}self_attn.{name}_proj.{kind}"] = part
          continue
        block = next(b for b in _BLOCK_RENAMES if rest.startswith(b + "."))
        out[base + _BLOCK_RENAMES[block] + rest[len(block):]] = value
      else:
        out[_PREFIXES[prefix] + rest] = value
  return {k: np.array(v, order="C") for k, v in out.items()}


def hf_to_state_dict(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """HF CLIPModel state_dict -> open_clip state_dict (the inverse of `state_dict_to_hf`)."""
  renames = {v: k for k, v in _RENAMES.items()}
  prefixes = {v: k for k, v in _PREFIXES.items()}
  blocks = {v: k for k, v in _BLOCK_RENAMES.items()}
  out, qkv = {}, {}
  for key, value in hf.items():
    if key.endswith("position_ids"):
      continue  # a buffer of positions 0..L-1, not a parameter
    if key in ("visual_projection.weight", "text_projection.weight"):
      out["visual.proj" if key.startswith("visual") else "text_projection"] = value.T
    elif key in renames:
      out[renames[key]] = value
    else:
      prefix = next((p for p in prefixes if key.startswith(p)), None)
      if prefix is None:
        raise CheckpointError(f"no open_clip name for Hugging Face tensor {key} (is this a "
                              f"CLIPModel checkpoint?)")
      rest = key[len(prefix):]
      if "layers" not in prefix:
        out[prefixes[prefix] + rest] = value
        continue
      layer, rest = rest.split(".", 1)
      base = f"{prefixes[prefix]}{layer}."
      match = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
      if match:
        qkv.setdefault((base, match.group(2)), {})[match.group(1)] = value
        continue
      block = next((b for b in blocks if rest.startswith(b + ".")), None)
      if block is None:
        raise CheckpointError(f"no open_clip name for Hugging Face tensor {key}")
      out[base + blocks[block] + rest[len(block):]] = value
  for (base, kind), parts in qkv.items():
    if set(parts) != set("qkv"):
      raise CheckpointError(f"{base}: attention needs q, k and v projections, got {sorted(parts)}")
    out[f"{base}attn.in_proj_{kind}"] = np.concatenate([parts[n] for n in "qkv"], axis=0)
  return {k: np.array(v, order="C") for k, v in out.items()}


def config_from_hf(config: dict) -> CLIPConfig:
  """A transformers CLIPConfig (as a dict) -> clipjax CLIPConfig (the registry entry when one
  is equal, so the export is named by it)."""
  try:
    v, t = config["vision_config"], config["text_config"]
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"gelu", "quick_gelu"}:
      raise CheckpointError(f"unsupported Hugging Face activations {sorted(acts)}")
    cfg = CLIPConfig(
        config.get("projection_dim", 512),
        VisionConfig(image_size=v["image_size"], patch_size=v["patch_size"], width=v["hidden_size"],
                     layers=v["num_hidden_layers"],
                     head_width=v["hidden_size"] // v["num_attention_heads"],
                     # +0.5: int(width * ratio) must give the MLP width back exactly
                     mlp_ratio=(v["intermediate_size"] + 0.5) / v["hidden_size"]),
        TextConfig(context_length=t["max_position_embeddings"], vocab_size=t["vocab_size"],
                   width=t["hidden_size"], heads=t["num_attention_heads"],
                   layers=t["num_hidden_layers"],
                   mlp_ratio=(t["intermediate_size"] + 0.5) / t["hidden_size"]),
        quick_gelu=acts == {"quick_gelu"})
  except KeyError as e:
    raise CheckpointError(f"Hugging Face CLIP config lacks {e}") from None

  def same(c: CLIPConfig) -> bool:  # equal up to how the MLP ratio is written
    return (c.vision.mlp_width, c.text.mlp_width) == (cfg.vision.mlp_width, cfg.text.mlp_width) \
        and isinstance(c.text, TextConfig) and not c.vision.is_resnet and c.replace(
            vision={"mlp_ratio": cfg.vision.mlp_ratio}, text={"mlp_ratio": cfg.text.mlp_ratio}) == cfg
  return next((c for c in MODEL_CONFIGS.values() if same(c)), cfg)


def hf_config(cfg: CLIPConfig):
  """transformers.CLIPConfig (MetaClip2Config for eos pooling) for an architecture."""
  from transformers import CLIPConfig as HFCLIPConfig
  from transformers import MetaClip2Config
  act = "quick_gelu" if cfg.quick_gelu else "gelu"
  v, t = cfg.vision, cfg.text
  metaclip2 = hf_model_class(cfg) == "MetaClip2Model"
  ids = (dict(eos_token_id=t.eos_id) if metaclip2 else
         dict(bos_token_id=SOT_ID, eos_token_id=EOT_ID, pad_token_id=PAD_ID))
  return (MetaClip2Config if metaclip2 else HFCLIPConfig)(
      text_config=dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_width,
                       num_hidden_layers=t.layers, num_attention_heads=t.heads,
                       max_position_embeddings=t.context_length, hidden_act=act,
                       layer_norm_eps=1e-5, projection_dim=cfg.embed_dim, **ids),
      vision_config=dict(hidden_size=v.width, intermediate_size=v.mlp_width,
                         num_hidden_layers=v.layers, num_attention_heads=v.heads,
                         image_size=v.image_size, patch_size=v.patch_size, hidden_act=act,
                         layer_norm_eps=1e-5, projection_dim=cfg.embed_dim),
      projection_dim=cfg.embed_dim, architectures=[hf_model_class(cfg)])


def hf_processor(cfg: CLIPConfig):
  """A transformers.CLIPProcessor equal to clipjax's preprocessing: the CLIP BPE vocabulary
  (open_clip pads with id 0, "!"), the weights' resize (bicubic or bilinear; shorter side +
  centre crop, or squash) and mean/std (`CLIPConfig.image_preprocess`, OpenAI's by default).
  MetaCLIP 2: the image processor and its HF tokenizer's files when they load locally."""

  import transformers

  if cfg.text.tokenizer_dir:
    return hf_siglip_processor(cfg, _clip_image_processor(cfg))
  names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
  vocab = {names.get(k, k): v for k, v in _build_bpe(str(default_bpe_path())).get_vocab().items()}
  with gzip.open(default_bpe_path(), "rt", encoding="utf-8") as f:
    merges = [tuple(line.split()) for line in f.read().split("\n")[1:49152 - 256 - 2 + 1]]
  tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!",
                                         model_max_length=cfg.text.context_length)
  return transformers.CLIPProcessor(image_processor=_clip_image_processor(cfg),
                                    tokenizer=tokenizer)


def _clip_image_processor(cfg: CLIPConfig):
  import transformers
  size, pre = cfg.vision.image_size, cfg.image_preprocess
  square = {"height": size, "width": size}
  resize = (dict(size=square, do_center_crop=False) if pre.resize_mode == "squash"
            else dict(size={"shortest_edge": size}, crop_size=square))
  return transformers.CLIPImageProcessor(
      **resize, image_mean=list(pre.mean), image_std=list(pre.std),
      resample={"bicubic": 3, "bilinear": 2}[pre.interpolation])


def hf_model_class(cfg: CLIPConfig) -> str | None:
  """The transformers 5 class an architecture exports to (`export_hf`), None if there is none."""
  if hf_export_refusal(cfg) is not None:
    return None
  if isinstance(cfg.vision, TimmViTConfig):
    return "Siglip2Model" if cfg.vision.naflex else "SiglipModel"
  return "MetaClip2Model" if cfg.text.pool_type == "eos" else "CLIPModel"


def hf_export_refusal(cfg: CLIPConfig, arch: str | CLIPConfig = "this model") -> str | None:
  """Why transformers 5 has no model class for an architecture (None when it has one): ResNet
  towers, timm trunks other than SigLIP's (EVA, PE, MobileCLIP, timm's CLIP ViTs), HF text
  towers, and CLIPModel's missing options (layer scale, CLIPA's pooling, CoCa's pooler, ...)."""
  name = arch if isinstance(arch, str) else "this model"
  v, t = cfg.vision, cfg.text
  instead = f"; export {name} with export_openclip instead"
  if isinstance(t, HFTextConfig):
    return f"Hugging Face transformers has no CLIP class with a {t.model_type} text tower" + instead
  if isinstance(v, TimmViTConfig):
    if v.is_siglip:
      return None
    return f"Hugging Face transformers has no model class for the timm trunk {v.timm_model_name}" \
        + instead
  if v.is_resnet:
    return "Hugging Face CLIPModel has no ResNet image tower" + instead
  gaps = [gap for gap, differs in (
      ("layer scale", v.ls_init_value is not None or t.ls_init_value is not None),
      ("no_ln_pre", v.no_ln_pre), (f"vision pool_type {v.pool_type!r}", v.pool_type != "tok"),
      ("final_ln_after_pool", v.final_ln_after_pool),
      ("attentional pooling", v.attentional_pool),
      (f"text pool_type {t.pool_type!r}", t.pool_type not in ("argmax", "eos")),
      ("bidirectional text attention", not t.causal))
          if differs]
  if gaps:
    return f"Hugging Face CLIPModel has no {', '.join(gaps)}" + instead
  return None


def export_hf(params: Params, arch: str | CLIPConfig, out_dir: str | os.PathLike) -> Path:
  """Writes `config.json`, `model.safetensors` and the processor files (tokenizer, image
  processor) into `out_dir`, for `CLIPModel.from_pretrained` / `CLIPProcessor.from_pretrained`
  (SigLIP architectures: `SiglipModel`, see `hf_siglip.py`).

  Files are written in a temporary folder and moved into `out_dir` one by one with atomic
  renames, weights first, so an interrupted export never leaves a truncated file.
  """
  cfg = config_for_params(arch, params)
  refusal = hf_export_refusal(cfg, arch)
  if refusal:
    raise CheckpointError(refusal)
  if isinstance(cfg.vision, TimmViTConfig):  # SigLIP / SigLIP 2: a SiglipModel directory
    return save_hf_dir(siglip_state_dict_to_hf(params_to_state_dict(params), cfg),
                       hf_siglip_config(cfg), out_dir, processor=hf_siglip_processor(cfg))
  return save_hf_dir(state_dict_to_hf(params_to_state_dict(params)), hf_config(cfg), out_dir,
                     processor=hf_processor(cfg))
