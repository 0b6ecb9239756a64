"""Architecture table: OpenCLIP model configs as frozen dataclasses.

Hyper-parameters are OpenCLIP's (`open_clip/model_configs/*.json`): a registry entry and the
open_clip JSON of the same name describe the same network, which is what lets weights move
between the two without a translation table beyond renames and transposes.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from typing import Any

from clipjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """A ViT (`layers` an int) or, as open_clip decides, a ModifiedResNet when `layers` is a tuple
  of four stage depths (then `width` is the stem width, `patch_size` None)."""
  image_size: int = 224
  patch_size: int | None = 32
  width: int = 768
  layers: int | tuple[int, ...] = 12
  head_width: int = 64
  mlp_ratio: float = 4.0

  @property
  def is_resnet(self) -> bool:
    return isinstance(self.layers, tuple)

  @property
  def heads(self) -> int:
    # ResNet: the attention pool works on the last stage's width * 32 channels
    return (self.width * 32 if self.is_resnet else self.width) // self.head_width

  @property
  def mlp_width(self) -> int:
    return int(self.width * self.mlp_ratio)  # open_clip truncates, e.g. ViT-g: 1408*4.3637 -> 6144

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TextConfig:
  context_length: int = 77
  vocab_size: int = 49408
  width: int = 512
  heads: int = 8
  layers: int = 12
  mlp_ratio: float = 4.0

  @property
  def mlp_width(self) -> int:
    return int(self.width * self.mlp_ratio)


@dataclasses.dataclass(frozen=True)
class HFTextConfig:
  """A Hugging Face encoder as the text tower (open_clip's `text_cfg.hf_model_name`).

  `hf_model_name` is what open_clip's JSON names (a hub id or a local directory with the HF
  `config.json` and tokenizer files); the remaining fields are that config's hyper-parameters,
  so the architecture is known without the hub (`from_hf_config` reads them from a config).
  """
  hf_model_name: str
  model_type: str  # roberta | xlm-roberta | t5 | mt5
  vocab_size: int
  width: int
  heads: int
  layers: int
  mlp_width: int
  pad_token_id: int
  layer_norm_eps: float
  context_length: int = 77  # tokenizer max_length (open_clip's text_cfg.context_length)
  hf_tokenizer_name: str | None = None
  pooler: str = "mean_pooler"  # or cls_last_hidden_state_pooler
  proj_type: str | None = "mlp"  # open_clip's default; linear; None: identity
  max_positions: int = 514  # RoBERTa position table (padding_idx + 1 + longest text)
  type_vocab_size: int = 1
  head_dim: int = 64  # T5 d_kv
  gated_act: bool = True  # T5 v1.1 / mT5 "gated-gelu"; False: original T5 "relu"
  relative_buckets: int = 32
  relative_max_distance: int = 128

  FAMILIES = {"roberta": "roberta", "xlm-roberta": "roberta", "t5": "t5", "mt5": "t5"}
  POOLERS = ("mean_pooler", "cls_last_hidden_state_pooler")

  def __post_init__(self):
    if self.model_type not in self.FAMILIES:
      raise ValueError(f"HF text tower type {self.model_type!r} is not supported; supported: "
                       f"{', '.join(self.FAMILIES)}")
    if self.pooler not in self.POOLERS:
      raise ValueError(f"hf_pooler_type {self.pooler!r} is not supported; supported: "
                       f"{', '.join(self.POOLERS)}")
    if self.proj_type not in ("mlp", "linear", None):
      raise ValueError(f"hf_proj_type must be mlp, linear or None, got {self.proj_type!r}")

  @property
  def family(self) -> str:
    return self.FAMILIES[self.model_type]

  @property
  def tokenizer_dir(self) -> str:
    return self.hf_tokenizer_name or self.hf_model_name

  @classmethod
  def from_hf_config(cls, hf: dict, hf_model_name: str, **open_clip_text_cfg: Any
                     ) -> "HFTextConfig":
    """From an HF `config.json` dict plus open_clip's `text_cfg` options (`hf_pooler_type`,
    `hf_proj_type`, `hf_tokenizer_name`, `context_length`)."""
    kind = hf.get("model_type")
    if kind not in cls.FAMILIES:
      raise ValueError(f"HF config of {hf_model_name} has model_type {kind!r}; supported: "
                       f"{', '.join(cls.FAMILIES)}")
    o = open_clip_text_cfg
    common = dict(hf_model_name=hf_model_name, model_type=kind, vocab_size=hf["vocab_size"],
                  pad_token_id=hf.get("pad_token_id", 1 if cls.FAMILIES[kind] == "roberta" else 0),
                  context_length=o.get("context_length", 77),
                  hf_tokenizer_name=o.get("hf_tokenizer_name"),
                  pooler=o.get("hf_pooler_type", "mean_pooler"),
                  proj_type=o.get("hf_proj_type", "mlp"))
    if cls.FAMILIES[kind] == "roberta":
      return cls(**common, width=hf["hidden_size"], heads=hf["num_attention_heads"],
                 layers=hf["num_hidden_layers"], mlp_width=hf["intermediate_size"],
                 layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                 max_positions=hf["max_position_embeddings"],
                 type_vocab_size=hf.get("type_vocab_size", 2))
    ff = hf.get("feed_forward_proj", "relu")
    if ff not in ("relu", "gated-gelu"):
      raise ValueError(f"T5 feed_forward_proj {ff!r} is not supported (relu, gated-gelu)")
    return cls(**common, width=hf["d_model"], heads=hf["num_heads"], layers=hf["num_layers"],
               mlp_width=hf["d_ff"], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
               head_dim=hf["d_kv"], gated_act=ff == "gated-gelu",
               relative_buckets=hf.get("relative_attention_num_buckets", 32),
               relative_max_distance=hf.get("relative_attention_max_distance", 128))

  def to_openclip_text_cfg(self) -> dict:
    out = dict(hf_model_name=self.hf_model_name,
               hf_tokenizer_name=self.hf_tokenizer_name or self.hf_model_name,
               hf_pooler_type=self.pooler)
    if self.proj_type != "mlp":
      out["hf_proj_type"] = self.proj_type
    if self.context_length != 77:
      out["context_length"] = self.context_length
    return out


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  embed_dim: int
  vision: VisionConfig
  text: TextConfig | HFTextConfig
  quick_gelu: bool = False
  init_logit_bias: float | None = None  # SigLIP-style models carry a learnable logit bias

  def replace(self, **kw: Any) -> "CLIPConfig":
    """Returns a copy; `vision=`/`text=` accept dicts of field overrides."""
    for key in ("vision", "text"):
      if isinstance(kw.get(key), dict):
        kw[key] = dataclasses.replace(getattr(self, key), **kw[key])
    return dataclasses.replace(self, **kw)

  def to_openclip_json(self) -> dict:
    """The open_clip model-config dict (`model_configs/<name>.json`) for this architecture."""
    v, t = self.vision, self.text
    vision = dict(image_size=v.image_size, layers=list(v.layers) if v.is_resnet else v.layers,
                  width=v.width, patch_size=v.patch_size)
    if v.head_width != 64:
      vision["head_width"] = v.head_width
    if v.mlp_ratio != 4.0:
      vision["mlp_ratio"] = v.mlp_ratio
    if isinstance(t, HFTextConfig):
      text = t.to_openclip_text_cfg()
    else:
      text = dict(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width,
                  heads=t.heads, layers=t.layers)
      if t.mlp_ratio != 4.0:
        text["mlp_ratio"] = t.mlp_ratio
    out: dict[str, Any] = dict(embed_dim=self.embed_dim)
    if self.quick_gelu:
      out["quick_gelu"] = True
    if self.init_logit_bias is not None:
      out["init_logit_bias"] = self.init_logit_bias
    out.update(vision_cfg=vision, text_cfg=text)
    return out


def _clip(embed_dim, vision, text, hf_text: HFTextConfig | None = None, **kw) -> CLIPConfig:
  return CLIPConfig(embed_dim, VisionConfig(**vision), hf_text or TextConfig(**text), **kw)


_ROBERTA_BASE = HFTextConfig("roberta-base", "roberta", vocab_size=50265, width=768, heads=12,
                             layers=12, mlp_width=3072, pad_token_id=1, layer_norm_eps=1e-5)
_XLMR_BASE = dataclasses.replace(_ROBERTA_BASE, hf_model_name="xlm-roberta-base",
                                 model_type="xlm-roberta", vocab_size=250002)
_MT5_BASE = HFTextConfig("google/mt5-base", "mt5", vocab_size=250112, width=768, heads=12,
                         layers=12, mlp_width=2048, pad_token_id=0, layer_norm_eps=1e-6)


def _resnet(embed_dim, image_size, layers, width, text_width) -> CLIPConfig:
  return _clip(embed_dim, dict(image_size=image_size, layers=layers, width=width, patch_size=None),
               dict(width=text_width, heads=text_width // 64, layers=12))


_B_TEXT = dict(width=512, heads=8, layers=12)
_L_TEXT = dict(width=768, heads=12, layers=12)
_H_TEXT = dict(width=1024, heads=16, layers=24)

_BASE: dict[str, CLIPConfig] = {
    "ViT-B-32": _clip(512, dict(patch_size=32, width=768, layers=12), _B_TEXT),
    "ViT-B-16": _clip(512, dict(patch_size=16, width=768, layers=12), _B_TEXT),
    "ViT-L-14": _clip(768, dict(patch_size=14, width=1024, layers=24), _L_TEXT),
    "ViT-L-14-336": _clip(768, dict(image_size=336, patch_size=14, width=1024, layers=24), _L_TEXT),
    "ViT-H-14": _clip(1024, dict(patch_size=14, width=1280, layers=32, head_width=80), _H_TEXT),
    "ViT-g-14": _clip(1024, dict(patch_size=14, width=1408, layers=40, head_width=88,
                                 mlp_ratio=4.3637), _H_TEXT),
    "ViT-bigG-14": _clip(1280, dict(patch_size=14, width=1664, layers=48, head_width=104,
                                    mlp_ratio=4.9231), dict(width=1280, heads=20, layers=32)),
    "RN50": _resnet(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _resnet(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _resnet(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _resnet(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _resnet(1024, 448, (3, 15, 36, 10), 128, 1024),
    # HF text towers; hf_model_name is the hub id open_clip's JSON names (its dims are below)
    "roberta-ViT-B-32": _clip(512, dict(patch_size=32, width=768, layers=12), None,
                              hf_text=_ROBERTA_BASE, quick_gelu=True),
    "xlm-roberta-base-ViT-B-32": _clip(512, dict(patch_size=32, width=768, layers=12), None,
                                       hf_text=_XLMR_BASE),
    "mt5-base-ViT-B-32": _clip(512, dict(patch_size=32, width=768, layers=12), None,
                               hf_text=_MT5_BASE),
    # Small configs for tests and the CPU quick start (not in open_clip; exported with their JSON).
    "ViT-T-16-test": _clip(64, dict(image_size=32, patch_size=16, width=64, layers=2),
                           dict(width=64, heads=2, layers=2)),
    "ViT-S-16-tiny": _clip(128, dict(image_size=64, patch_size=16, width=128, layers=4),
                           dict(width=128, heads=4, layers=4)),
    "RN-T-test": _clip(64, dict(image_size=64, layers=(1, 1, 1, 1), width=8, patch_size=None),
                       dict(width=64, heads=2, layers=2)),
}
# not in open_clip: exported together with their JSON
CLIPJAX_ONLY = frozenset({"ViT-T-16-test", "ViT-S-16-tiny", "RN-T-test"})
# open_clip ships a -quickgelu config for these (OpenAI / MetaCLIP / DFN weights); not for ViT-g-14.
_QUICKGELU = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-bigG-14",
              "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")

MODEL_CONFIGS: dict[str, CLIPConfig] = dict(_BASE)
MODEL_CONFIGS.update({f"{n}-quickgelu": dataclasses.replace(_BASE[n], quick_gelu=True)
                      for n in _QUICKGELU})


def list_models() -> list[str]:
  return sorted(MODEL_CONFIGS)


def get_model_config(arch: str | CLIPConfig) -> CLIPConfig:
  """Looks up an architecture by its open_clip name, or reads an open_clip model-config JSON
  file (`*.json`, e.g. one naming a local HF text-tower directory); passes a `CLIPConfig`
  through."""
  if isinstance(arch, CLIPConfig):
    return arch
  if str(arch).endswith(".json"):
    try:
      with open(arch) as f:
        return config_from_openclip_json(json.load(f))
    except FileNotFoundError:
      raise ConfigError(f"open_clip model config {arch!r} does not exist") from None
  try:
    return MODEL_CONFIGS[arch]
  except KeyError:
    close = difflib.get_close_matches(str(arch), list_models(), n=1)
    raise ConfigError(f"unknown architecture {arch!r}"
                      + (f" (did you mean {close[0]!r}?)" if close else "")
                      + f"; known: {', '.join(list_models())}") from None


def config_from_openclip_json(cfg: dict) -> CLIPConfig:
  """Parses an open_clip model-config dict (the inverse of `CLIPConfig.to_openclip_json`)."""
  unsupported = set(cfg) - {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "init_logit_bias",
                            "custom_text"}
  if unsupported:
    raise ValueError(f"open_clip config keys not supported by clipjax: {sorted(unsupported)}")
  vfields = {f.name for f in dataclasses.fields(VisionConfig)}
  tfields = {f.name for f in dataclasses.fields(TextConfig)}
  if "hf_model_name" in cfg["text_cfg"]:
    tfields = {"hf_model_name", "hf_tokenizer_name", "hf_pooler_type", "hf_proj_type",
               "hf_model_pretrained", "context_length"}
  for name, section, fields in (("vision_cfg", cfg["vision_cfg"], vfields),
                                ("text_cfg", cfg["text_cfg"], tfields)):
    extra = set(section) - fields
    if extra:
      raise ValueError(f"{name} keys not supported by clipjax: {sorted(extra)}")
  vision = dict(cfg["vision_cfg"])
  if isinstance(vision.get("layers"), (list, tuple)):
    vision["layers"] = tuple(vision["layers"])
  text = cfg["text_cfg"]
  text = hf_text_config(text) if "hf_model_name" in text else TextConfig(**text)
  return CLIPConfig(cfg["embed_dim"], VisionConfig(**vision),
                    text, quick_gelu=bool(cfg.get("quick_gelu", False)),
                    init_logit_bias=cfg.get("init_logit_bias"))


def hf_text_config(text_cfg: dict) -> HFTextConfig:
  """open_clip `text_cfg` with `hf_model_name` -> HFTextConfig: a local directory's
  `config.json` gives the hyper-parameters, else a hub id this registry knows."""
  name = text_cfg["hf_model_name"]
  opts = {k: v for k, v in text_cfg.items() if k not in ("hf_model_name", "hf_model_pretrained")}
  config_json = os.path.join(name, "config.json")
  if os.path.isfile(config_json):
    with open(config_json) as f:
      return HFTextConfig.from_hf_config(json.load(f), name, **opts)
  known = {c.text.hf_model_name: c.text for c in MODEL_CONFIGS.values()
           if isinstance(c.text, HFTextConfig)}
  if name not in known:
    raise ValueError(f"HF text model {name!r}: no config.json in that directory and not a known "
                     f"hub id ({', '.join(sorted(known))}); pass a local directory holding the HF "
                     f"config.json and tokenizer files")
  fields = dict(context_length=opts.get("context_length", 77),
                hf_tokenizer_name=opts.get("hf_tokenizer_name"),
                pooler=opts.get("hf_pooler_type", "mean_pooler"),
                proj_type=opts.get("hf_proj_type", "mlp"))
  return dataclasses.replace(known[name], **fields)
