"""Plain Hugging Face text-encoder checkpoints <-> the `text/transformer` params of an HF tower.

open_clip checkpoints of HF-tower models (`text.transformer.*`, `text.proj.*`) go through
`convert.openclip` like any other; this module reads and writes the HF model's own files
(`config.json` + `model.safetensors` or a torch `.bin`), e.g. to start from a pretrained
`xlm-roberta-base` directory or to hand a fine-tuned text encoder back to `AutoModel`.
The projection head is open_clip's, so it is not part of these files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from clipjax.convert.io import CheckpointError, load_state_dict, save_hf_dir
from clipjax.convert.openclip import _describe, _from_torch_layout, params_to_state_dict
from clipjax.models.configs import HFTextConfig
from clipjax.models.naming import flatten, torch_key, unflatten

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# the HF config fields each family's hyper-parameters are checked against
_CHECKED = {"roberta": dict(vocab_size="vocab_size", hidden_size="width",
                            num_attention_heads="heads", num_hidden_layers="layers",
                            intermediate_size="mlp_width", max_position_embeddings="max_positions"),
            "t5": dict(vocab_size="vocab_size", d_model="width", num_heads="heads",
                       num_layers="layers", d_ff="mlp_width", d_kv="head_dim"),
            "m2m_100": dict(vocab_size="vocab_size", d_model="width",
                            encoder_attention_heads="heads", encoder_layers="layers",
                            encoder_ffn_dim="mlp_width", activation_function="activation",
                            scale_embedding="scale_embedding")}


def _encoder_keys(sd: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
  """The bare encoder's tensors, named as in open_clip's `text.transformer`: drops `roberta.` /
  `model.` / `encoder.` prefixes, poolers, LM heads and decoders; T5's and M2M100's `shared` is
  the embedding (M2M100 checkpoints tie the encoder's to it)."""
  out = {}
  for key, value in sd.items():
    if family == "roberta":
      key = key.removeprefix("roberta.")
      keep = key.startswith(("embeddings.", "encoder."))
    elif family == "m2m_100":
      key = key.removeprefix("model.")
      key = "embed_tokens.weight" if key == "shared.weight" else key.removeprefix("encoder.")
      keep = key.startswith(("embed_tokens.", "layers.", "layer_norm."))
    else:
      key = "embed_tokens.weight" if key == "shared.weight" else key.removeprefix("encoder.")
      keep = key.startswith(("embed_tokens.", "block.", "final_layer_norm."))
    if keep:
      out.setdefault(key, value)
  return out


def check_hf_config(hf: dict[str, Any], cfg: HFTextConfig, source: str) -> None:
  """Raises CheckpointError naming each hyper-parameter where an HF config.json and the
  architecture disagree."""
  if HFTextConfig.FAMILIES.get(hf.get("model_type")) != cfg.family:
    raise CheckpointError(f"{source}: config.json has model_type {hf.get('model_type')!r}, the "
                          f"architecture needs a {cfg.model_type} encoder")
  bad = [f"{k}={hf.get(k)} (expected {getattr(cfg, f)})"
         for k, f in _CHECKED[cfg.family].items() if hf.get(k) != getattr(cfg, f)]
  if bad:
    raise CheckpointError(f"{source}: config.json does not match the architecture: "
                          + ", ".join(bad))


def load_hf_text_weights(params: dict, cfg: HFTextConfig, model_dir: str | os.PathLike) -> dict:
  """Returns `params` with `text/transformer` replaced by the HF checkpoint in `model_dir`
  (config.json checked against `cfg`; every encoder tensor present and of the right shape)."""
  model_dir = Path(model_dir)
  config = model_dir / "config.json"
  if not config.is_file():
    raise CheckpointError(f"{model_dir}: no config.json (expected an HF model directory written "
                          f"by save_pretrained)")
  check_hf_config(json.loads(config.read_text()), cfg, str(model_dir))
  weights = next((model_dir / f for f in _WEIGHT_FILES if (model_dir / f).is_file()), None)
  if weights is None:
    raise CheckpointError(f"{model_dir}: no {' or '.join(_WEIGHT_FILES)}")
  sd = _encoder_keys(load_state_dict(weights), cfg.family)
  want = {torch_key(("transformer",) + p)[0].removeprefix("transformer."): (p, v)
          for p, v in flatten(params["text"]["transformer"]).items()}
  missing = set(want) - set(sd)
  if missing:
    raise CheckpointError(f"{weights} lacks encoder tensors: {_describe(missing)}")
  flat, bad = {}, []
  for key, (path, old) in want.items():
    kind = torch_key(("transformer",) + path)[1]
    value = _from_torch_layout(np.asarray(sd[key], np.float32), kind)
    if value.shape != old.shape:
      bad.append(f"{key}: expected {old.shape}, got {value.shape}")
    flat[path] = jnp.asarray(value)
  if bad:
    raise CheckpointError(f"{weights} has tensors of the wrong shape:\n  " + "\n  ".join(bad))
  return {**params, "text": {**params["text"], "transformer": unflatten(flat)}}


def hf_text_config(cfg: HFTextConfig):
  """The transformers config object of the tower's encoder."""
  import transformers
  if cfg.family == "roberta":
    cls = (transformers.XLMRobertaConfig if cfg.model_type == "xlm-roberta"
           else transformers.RobertaConfig)
    return cls(vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_attention_heads=cfg.heads,
               num_hidden_layers=cfg.layers, intermediate_size=cfg.mlp_width,
               max_position_embeddings=cfg.max_positions, type_vocab_size=cfg.type_vocab_size,
               layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id,
               hidden_act="gelu")
  if cfg.family == "m2m_100":  # the encoder's sizes (open_clip keeps only the encoder)
    return transformers.M2M100Config(
        vocab_size=cfg.vocab_size, d_model=cfg.width, encoder_attention_heads=cfg.heads,
        encoder_layers=cfg.layers, encoder_ffn_dim=cfg.mlp_width,
        max_position_embeddings=cfg.max_positions, pad_token_id=cfg.pad_token_id,
        activation_function=cfg.activation, scale_embedding=cfg.scale_embedding)
  cls = transformers.MT5Config if cfg.model_type == "mt5" else transformers.T5Config
  return cls(vocab_size=cfg.vocab_size, d_model=cfg.width, num_heads=cfg.heads,
             num_layers=cfg.layers, d_ff=cfg.mlp_width, d_kv=cfg.head_dim,
             layer_norm_epsilon=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id,
             feed_forward_proj="gated-gelu" if cfg.gated_act else "relu",
             relative_attention_num_buckets=cfg.relative_buckets,
             relative_attention_max_distance=cfg.relative_max_distance)


def export_hf_text(params: dict, cfg: HFTextConfig, out_dir: str | os.PathLike) -> Path:
  """Writes the text encoder as an HF model directory (`AutoModel.from_pretrained` for RoBERTa;
  `T5EncoderModel` / `MT5EncoderModel` for T5), atomically file by file. The open_clip
  projection is not included (export the whole model with `export_openclip` for that).
  M2M100 (NLLB) is refused: transformers has no encoder-only class to load it into."""
  if cfg.family == "m2m_100":
    raise CheckpointError(f"{cfg.hf_model_name}: transformers has no encoder-only M2M100 model, "
                          "so the NLLB text encoder is not written as an HF directory; "
                          "export_openclip writes the whole model for open_clip")
  sd = {k.removeprefix("text.transformer."): v
        for k, v in params_to_state_dict({"text": params["text"]}).items()
        if k.startswith("text.transformer.")}
  if cfg.family == "t5":  # T5EncoderModel names: shared embedding + encoder.*
    sd = {("shared.weight" if k == "embed_tokens.weight" else f"encoder.{k}"): v
          for k, v in sd.items()}
  return save_hf_dir(sd, hf_text_config(cfg), out_dir)
