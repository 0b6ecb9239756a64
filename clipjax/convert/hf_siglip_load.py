"""Read a Hugging Face `SiglipModel` or `Siglip2Model` folder (fixed resolution or NaFlex) as
open_clip SigLIP tensors: the inverse of `hf_siglip.siglip_state_dict_to_hf`, and the
architecture its `config.json` describes (the registry entry when one is equal)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from clipjax.convert.hf_siglip import siglip_tensors_to_hf
from clipjax.convert.io import CheckpointError
from clipjax.models.configs import CLIPConfig, TextConfig, TimmViTConfig
from clipjax.models.registry import MODEL_CONFIGS

HF_SIGLIP_TYPES = ("siglip", "siglip2")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model")


def hf_siglip_to_state_dict(hf: dict[str, np.ndarray], cfg: CLIPConfig) -> dict[str, np.ndarray]:
  """SiglipModel / Siglip2Model tensors -> open_clip tensors for `cfg` (timm trunk names;
  `visual.trunk.embeds.*` for NaFlex). Every tensor is used or the load fails naming it."""
  # The forward mapping is one to one apart from the fused q/k/v and the MAP head's in_proj,
  # so the inverse is read off it: rename a template state dict and invert the names.
  probe = {k: np.zeros(0) for k in _template_keys(hf, cfg)}
  names = {hf_key: oc_key for oc_key in probe
           for hf_key in siglip_tensors_to_hf({oc_key: np.zeros(3)})}
  out, fused = {}, {}
  for key, value in hf.items():
    if key.endswith("position_ids"):
      continue  # a buffer of positions 0..L-1, not a parameter
    match = re.fullmatch(r"(.*)self_attn\.([qkv])_proj\.(weight|bias)", key)
    if match:
      fused.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
    elif key.startswith("vision_model.head.attention.in_proj_"):
      leaf = key.rsplit("_", 1)[1]
      width = value.shape[0] // 3
      out[f"visual.trunk.attn_pool.q.{leaf}"] = value[:width]
      out[f"visual.trunk.attn_pool.kv.{leaf}"] = value[width:]
    elif key in ("logit_scale", "logit_bias"):
      out[key] = np.reshape(value, ())
    elif key == "vision_model.embeddings.position_embedding.weight":
      grid = cfg.vision.grid
      out["visual.trunk.embeds.pos_embed" if cfg.vision.naflex else "visual.trunk.pos_embed"] = (
          value.reshape(1, grid, grid, -1) if cfg.vision.naflex else value[None])
    elif key in names:
      out[names[key]] = value
    else:
      raise CheckpointError(f"no open_clip name for Hugging Face SigLIP tensor {key}")
  for (base, leaf), parts in fused.items():
    if set(parts) != set("qkv"):
      raise CheckpointError(f"{base}: attention needs q, k and v projections, got {sorted(parts)}")
    layer = re.fullmatch(r"(text|vision)_model\.encoder\.layers\.(\d+)\.", base)
    if layer is None:
      raise CheckpointError(f"no open_clip name for Hugging Face SigLIP attention {base}")
    target = (f"text.transformer.resblocks.{layer.group(2)}.attn.in_proj_{leaf}"
              if layer.group(1) == "text" else f"visual.trunk.blocks.{layer.group(2)}.attn.qkv.{leaf}")
    out[target] = np.concatenate([parts[n] for n in "qkv"], axis=0)
  return {k: np.array(v, order="C") for k, v in out.items()}


def _template_keys(hf: dict, cfg: CLIPConfig) -> list[str]:
  """The open_clip keys whose names map one to one (blocks by their HF layer numbers)."""
  layers = {(m.group(1), m.group(2)) for m in
            (re.match(r"(text|vision)_model\.encoder\.layers\.(\d+)\.", k) for k in hf) if m}
  keys = [f"text.transformer.resblocks.{i}.{m}.{leaf}" for t, i in layers if t == "text"
          for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "attn.out_proj")
          for leaf in ("weight", "bias")]
  keys += [f"visual.trunk.blocks.{i}.{m}.{leaf}" for t, i in layers if t == "vision"
           for m in ("norm1", "norm2", "mlp.fc1", "mlp.fc2", "attn.proj")
           for leaf in ("weight", "bias")]
  keys += [f"visual.trunk.attn_pool.{m}.{leaf}" for m in ("proj", "norm", "mlp.fc1", "mlp.fc2")
           for leaf in ("weight", "bias")] + ["visual.trunk.attn_pool.latent"]
  embed = "visual.trunk.embeds.proj" if cfg.vision.naflex else "visual.trunk.patch_embed.proj"
  keys += [f"{embed}.{leaf}" for leaf in ("weight", "bias")]
  keys += ["text.token_embedding.weight", "text.positional_embedding", "text.ln_final.weight",
           "text.ln_final.bias", "text.text_projection.weight", "text.text_projection.bias",
           "visual.trunk.norm.weight", "visual.trunk.norm.bias"]
  return keys


def config_from_hf_siglip(config: dict, directory: Path | None = None) -> CLIPConfig:
  """A transformers SiglipConfig / Siglip2Config (as a dict) -> CLIPConfig: the registry entry
  when one is equal, else a clipjax-only architecture named after the folder. The text tower
  uses the folder's own tokenizer when its files are there (the Gemma tokenizer of SigLIP 2)."""
  try:
    v, t = config["vision_config"], config["text_config"]
    naflex = config.get("model_type") == "siglip2"
    patch, width = v["patch_size"], v["hidden_size"]
    grid = int(round(v["num_patches"] ** 0.5)) if naflex else v["image_size"] // patch
    name = (f"naflexvit_hf_patch{patch}_siglip" if naflex
            else f"vit_hf_patch{patch}_siglip_{v['image_size']}")
    vision = TimmViTConfig(name, grid * patch, patch, width, v["num_hidden_layers"],
                           v["num_attention_heads"],
                           (v["intermediate_size"] + 0.5) / width,
                           gelu_tanh=v.get("hidden_act") == "gelu_pytorch_tanh", naflex=naflex)
    text = TextConfig(t.get("max_position_embeddings", 64), t["vocab_size"], t["hidden_size"],
                      t["num_attention_heads"], t["num_hidden_layers"],
                      (t["intermediate_size"] + 0.5) / t["hidden_size"], causal=False,
                      pool_type="last", proj_type="linear", proj_bias=True,
                      ln_eps=t.get("layer_norm_eps", 1e-6),
                      gelu_tanh=t.get("hidden_act") == "gelu_pytorch_tanh")
    embed_dim = t.get("projection_size") or t["hidden_size"]
  except KeyError as e:
    raise CheckpointError(f"Hugging Face SigLIP config lacks {e}") from None
  if vision.mlp_width != v["intermediate_size"] or text.mlp_width != t["intermediate_size"]:
    raise CheckpointError("Hugging Face SigLIP config: intermediate sizes clipjax cannot express")
  cfg = CLIPConfig(embed_dim, vision, text, init_logit_bias=-10.0, custom_text=True)
  for known in MODEL_CONFIGS.values():
    if _same_network(known, cfg):
      cfg = known
      break
  if directory is not None and any((directory / f).is_file() for f in _TOKENIZER_FILES):
    cfg = cfg.replace(text={"hf_tokenizer_name": str(directory), "tokenizer_kwargs":
                            (("clean", "canonicalize"),)})
  processor = None if directory is None else directory / "preprocessor_config.json"
  if naflex and processor is not None and processor.is_file():
    # the folder's processor decides the eval sequence length, not the architecture default
    patches = json.loads(processor.read_text()).get("max_num_patches")
    if isinstance(patches, int) and patches > 0:
      cfg = cfg.replace(vision={"max_num_patches": patches})
  return cfg


def _same_network(known: CLIPConfig, cfg: CLIPConfig) -> bool:
  """Equal up to names, the MLP ratio's spelling, tokenizer and the default sequence length."""
  if not isinstance(known.vision, TimmViTConfig) or not isinstance(known.text, TextConfig):
    return False
  kv, kt, v, t = known.vision, known.text, cfg.vision, cfg.text
  return (known.embed_dim == cfg.embed_dim and kt.proj_type == "linear"
          and (kv.image_size, kv.patch_size, kv.width, kv.layers, kv.heads, kv.mlp_width,
               kv.gelu_tanh, kv.naflex)
          == (v.image_size, v.patch_size, v.width, v.layers, v.heads, v.mlp_width, v.gelu_tanh,
              v.naflex)
          and (kt.context_length, kt.vocab_size, kt.width, kt.heads, kt.layers, kt.mlp_width,
               kt.gelu_tanh, kt.ln_eps)
          == (t.context_length, t.vocab_size, t.width, t.heads, t.layers, t.mlp_width,
              t.gelu_tanh, t.ln_eps))
