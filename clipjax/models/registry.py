"""Architecture table: OpenCLIP model configs as frozen dataclasses.

Hyper-parameters are OpenCLIP's (`open_clip/model_configs/*.json`): a registry entry and the
open_clip JSON of the same name describe the same network, which is what lets weights move
between the two without a translation table beyond renames and transposes.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  image_size: int = 224
  patch_size: int = 32
  width: int = 768
  layers: int = 12
  head_width: int = 64
  mlp_ratio: float = 4.0

  @property
  def heads(self) -> int:
    return self.width // self.head_width

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
class CLIPConfig:
  embed_dim: int
  vision: VisionConfig
  text: TextConfig
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
    vision = dict(image_size=v.image_size, layers=v.layers, width=v.width, patch_size=v.patch_size)
    if v.head_width != 64:
      vision["head_width"] = v.head_width
    if v.mlp_ratio != 4.0:
      vision["mlp_ratio"] = v.mlp_ratio
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


def _clip(embed_dim, vision, text, **kw) -> CLIPConfig:
  return CLIPConfig(embed_dim, VisionConfig(**vision), TextConfig(**text), **kw)


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
    # Small configs for tests and the CPU quick start (not in open_clip; exported with their JSON).
    "ViT-T-16-test": _clip(64, dict(image_size=32, patch_size=16, width=64, layers=2),
                           dict(width=64, heads=2, layers=2)),
    "ViT-S-16-tiny": _clip(128, dict(image_size=64, patch_size=16, width=128, layers=4),
                           dict(width=128, heads=4, layers=4)),
}
CLIPJAX_ONLY = frozenset({"ViT-T-16-test", "ViT-S-16-tiny"})  # exported together with their JSON
# open_clip ships a -quickgelu config for these (OpenAI / MetaCLIP / DFN weights); not for ViT-g-14.
_QUICKGELU = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-bigG-14")

MODEL_CONFIGS: dict[str, CLIPConfig] = dict(_BASE)
MODEL_CONFIGS.update({f"{n}-quickgelu": dataclasses.replace(_BASE[n], quick_gelu=True)
                      for n in _QUICKGELU})


def list_models() -> list[str]:
  return sorted(MODEL_CONFIGS)


def get_model_config(arch: str | CLIPConfig) -> CLIPConfig:
  """Looks up an architecture by its open_clip name (or passes a `CLIPConfig` through)."""
  if isinstance(arch, CLIPConfig):
    return arch
  try:
    return MODEL_CONFIGS[arch]
  except KeyError:
    raise ValueError(f"Unknown architecture {arch!r}; known: {', '.join(list_models())}") from None


def config_from_openclip_json(cfg: dict) -> CLIPConfig:
  """Parses an open_clip model-config dict (the inverse of `CLIPConfig.to_openclip_json`)."""
  unsupported = set(cfg) - {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "init_logit_bias",
                            "custom_text"}
  if unsupported:
    raise ValueError(f"open_clip config keys not supported by clipjax: {sorted(unsupported)}")
  vfields = {f.name for f in dataclasses.fields(VisionConfig)}
  tfields = {f.name for f in dataclasses.fields(TextConfig)}
  for name, section, fields in (("vision_cfg", cfg["vision_cfg"], vfields),
                                ("text_cfg", cfg["text_cfg"], tfields)):
    extra = set(section) - fields
    if extra:
      raise ValueError(f"{name} keys not supported by clipjax: {sorted(extra)}")
  return CLIPConfig(cfg["embed_dim"], VisionConfig(**cfg["vision_cfg"]),
                    TextConfig(**cfg["text_cfg"]), quick_gelu=bool(cfg.get("quick_gelu", False)),
                    init_logit_bias=cfg.get("init_logit_bias"))
