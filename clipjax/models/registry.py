"""The architecture table: open_clip's model configs by name (dataclasses in `configs.py`).

Hyper-parameters are OpenCLIP's (`open_clip/model_configs/*.json`): a registry entry and the
open_clip JSON of the same name describe the same network, which is what lets weights move
between the two without a translation table beyond renames and transposes.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os

from clipjax.errors import ConfigError
from clipjax.models.configs import (
  CLIPConfig,
  HFTextConfig,
  TextConfig,
  TimmViTConfig,
  VisionConfig,
)
from clipjax.models.timm_trunks import timm_tower, timm_trunk


def _clip(embed_dim, vision, text, hf_text: HFTextConfig | None = None, **kw) -> CLIPConfig:
  return CLIPConfig(embed_dim, VisionConfig(**vision), hf_text or TextConfig(**text), **kw)


_ROBERTA_BASE = HFTextConfig("roberta-base", "roberta", vocab_size=50265, width=768, heads=12,
                             layers=12, mlp_width=3072, pad_token_id=1, layer_norm_eps=1e-5)
_XLMR_BASE = dataclasses.replace(_ROBERTA_BASE, hf_model_name="xlm-roberta-base",
                                 model_type="xlm-roberta", vocab_size=250002)
_MT5_BASE = HFTextConfig("google/mt5-base", "mt5", vocab_size=250112, width=768, heads=12,
                         layers=12, mlp_width=2048, pad_token_id=0, layer_norm_eps=1e-6)
_XLMR_LARGE = dataclasses.replace(_XLMR_BASE, hf_model_name="xlm-roberta-large", width=1024,
                                  heads=16, layers=24, mlp_width=4096)
_MT5_XL = dataclasses.replace(_MT5_BASE, hf_model_name="google/mt5-xl", width=2048, heads=32,
                              layers=24, mlp_width=5120)
# NLLB-200 (distilled) encoders: M2M100, the first token's state (the language code) pooled
_NLLB_600M = HFTextConfig("facebook/nllb-200-distilled-600M", "m2m_100", vocab_size=256206,
                          width=1024, heads=16, layers=12, mlp_width=4096, pad_token_id=1,
                          layer_norm_eps=1e-5, pooler="cls_pooler", proj_type="linear",
                          max_positions=1024)
_NLLB_1_3B = dataclasses.replace(_NLLB_600M, hf_model_name="facebook/nllb-200-distilled-1.3B",
                                 layers=24, mlp_width=8192)


def _resnet(embed_dim, image_size, layers, width, text_width) -> CLIPConfig:
  return _clip(embed_dim, dict(image_size=image_size, layers=layers, width=width, patch_size=None),
               dict(width=text_width, heads=text_width // 64, layers=12))


_B_TEXT = dict(width=512, heads=8, layers=12)
_L_TEXT = dict(width=768, heads=12, layers=12)
_H_TEXT = dict(width=1024, heads=16, layers=24)
_BP_TEXT = dict(width=640, heads=10, layers=12)
_H_VISION = dict(patch_size=14, width=1280, layers=32, head_width=80)
_BIGG_VISION = dict(patch_size=14, width=1664, layers=48, head_width=104, mlp_ratio=4.9231)

_BASE: dict[str, CLIPConfig] = {
    "ViT-B-32": _clip(512, dict(patch_size=32, width=768, layers=12), _B_TEXT),
    "ViT-B-16": _clip(512, dict(patch_size=16, width=768, layers=12), _B_TEXT),
    "ViT-L-14": _clip(768, dict(patch_size=14, width=1024, layers=24), _L_TEXT),
    "ViT-L-14-336": _clip(768, dict(image_size=336, patch_size=14, width=1024, layers=24), _L_TEXT),
    "ViT-H-14": _clip(1024, _H_VISION, _H_TEXT),
    "ViT-g-14": _clip(1024, dict(patch_size=14, width=1408, layers=40, head_width=88,
                                 mlp_ratio=4.3637), _H_TEXT),
    "ViT-bigG-14": _clip(1280, _BIGG_VISION, dict(width=1280, heads=20, layers=32)),
    # open_clip's other plain ViTs: resolution / width variants (B-plus, 256-378 px), the small
    # S / M towers (and their "-alt" text towers; M-16-alt has layer scale) and ViT-e.
    "ViT-B-32-256": _clip(512, dict(image_size=256, patch_size=32, width=768, layers=12), _B_TEXT),
    "ViT-B-16-plus": _clip(640, dict(patch_size=16, width=896, layers=12), _BP_TEXT),
    "ViT-B-16-plus-240": _clip(640, dict(image_size=240, patch_size=16, width=896, layers=12),
                               _BP_TEXT),
    "ViT-B-32-plus-256": _clip(640, dict(image_size=256, patch_size=32, width=896, layers=12),
                               _BP_TEXT),
    "ViT-L-16": _clip(768, dict(patch_size=16, width=1024, layers=24), _L_TEXT),
    "ViT-L-14-280": _clip(768, dict(image_size=280, patch_size=14, width=1024, layers=24), _L_TEXT),
    "ViT-L-16-320": _clip(768, dict(image_size=320, patch_size=16, width=1024, layers=24), _L_TEXT),
    "ViT-H-16": _clip(1024, dict(patch_size=16, width=1280, layers=32, head_width=80), _H_TEXT),
    "ViT-H-14-378": _clip(1024, {**_H_VISION, "image_size": 378}, _H_TEXT),
    "ViT-e-14": _clip(1280, dict(patch_size=14, width=1792, layers=56, head_width=112,
                                 mlp_ratio=8.5715), dict(width=1280, heads=20, layers=36)),
    **{f"ViT-{size}-{patch}{alt}": _clip(
        embed, dict(patch_size=patch, width=width, layers=12,
                    ls_init_value=1e-4 if (size, patch, alt) == ("M", 16, "-alt") else None),
        dict(width=embed, heads=embed // 64, layers=10 if (size, alt) == ("S", "-alt") else 12))
       for size, width, embeds in (("S", 384, (384, 256)), ("M", 512, (512, 384)))
       for patch in (16, 32) for alt, embed in zip(("", "-alt"), embeds)},
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
    "xlm-roberta-large-ViT-H-14": _clip(1024, _H_VISION, None, hf_text=_XLMR_LARGE),
    "mt5-xl-ViT-H-14": _clip(1024, _H_VISION, None, hf_text=_MT5_XL),
    "nllb-clip-base": _clip(512, dict(patch_size=32, width=768, layers=12), None,
                            hf_text=_NLLB_600M),
    "nllb-clip-large": _clip(1024, _H_VISION, None, hf_text=_NLLB_1_3B),
    # Small configs for tests and the CPU quick start (not in open_clip; exported with their JSON).
    "ViT-T-16-test": _clip(64, dict(image_size=32, patch_size=16, width=64, layers=2),
                           dict(width=64, heads=2, layers=2)),
    "ViT-S-16-tiny": _clip(128, dict(image_size=64, patch_size=16, width=128, layers=4),
                           dict(width=128, heads=4, layers=4)),
    "RN-T-test": _clip(64, dict(image_size=64, layers=(1, 1, 1, 1), width=8, patch_size=None),
                       dict(width=64, heads=2, layers=2)),
}

_SIGLIP_TEXT = {"B": (768, 12, 12, 4.0), "L": (1024, 16, 24, 4.0), "SO400M": (1152, 16, 27, 3.7362)}
_SIGLIP_VOCAB = {"SigLIP": 32000, "SigLIP-i18n": 250000, "SigLIP2": 256000}


def _siglip(trunk_name: str, text: str, kind: str, embed_dim: int | None = None,
            tokenizer: str = "", context_length: int = 64, proj_type: str = "linear") -> CLIPConfig:
  """A SigLIP / SigLIP 2 architecture as open_clip's JSON states it (`custom_text`, logit bias
  -10, T5 / multilingual / Gemma tokenizer vocabularies, tanh GELU in SigLIP 2 text towers)."""
  width, heads, layers, mlp_ratio = _SIGLIP_TEXT[text]
  return CLIPConfig(
      embed_dim or width, timm_trunk(trunk_name),
      TextConfig(context_length, _SIGLIP_VOCAB[kind], width, heads, layers, mlp_ratio,
                 causal=False, pool_type="last", proj_type=proj_type,
                 proj_bias=proj_type != "none",
                 ln_eps=1e-6, gelu_tanh=kind == "SigLIP2", hf_tokenizer_name=tokenizer,
                 tokenizer_kwargs=(("clean", "canonicalize"),)),
      init_logit_bias=-10.0, custom_text=True)


_T5, _I18N = "timm/ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP-i18n-256"
_SIGLIP: dict[str, CLIPConfig] = {
    **{f"ViT-B-16-SigLIP{s}": _siglip(f"vit_base_patch16_siglip_{r}", "B", "SigLIP",
                                      tokenizer=_T5)
       for s, r in (("", 224), ("-256", 256), ("-384", 384), ("-512", 512))},
    "ViT-B-16-SigLIP-i18n-256": _siglip("vit_base_patch16_siglip_256", "B", "SigLIP-i18n",
                                        tokenizer=_I18N),
    **{f"ViT-L-16-SigLIP-{r}": _siglip(f"vit_large_patch16_siglip_{r}", "L", "SigLIP",
                                       tokenizer=_T5) for r in (256, 384)},
    "ViT-SO400M-14-SigLIP": _siglip("vit_so400m_patch14_siglip_224", "SO400M", "SigLIP",
                                    tokenizer=_T5, context_length=16),
    **{f"ViT-SO400M-14-SigLIP-{r}": _siglip(f"vit_so400m_patch14_siglip_{r}", "SO400M",
                                            "SigLIP", tokenizer=_T5) for r in (378, 384)},
    "ViT-SO400M-16-SigLIP-i18n-256": _siglip("vit_so400m_patch16_siglip_256", "SO400M",
                                             "SigLIP-i18n", tokenizer=_I18N, proj_type="none"),
}
for _name, _trunk, _text, _embed in (
    ("ViT-B-32-SigLIP2-256", "vit_base_patch32_siglip_256", "B", None),
    *((f"ViT-B-16-SigLIP2{s}", f"vit_base_patch16_siglip_{r}", "B", None)
      for s, r in (("", 224), ("-256", 256), ("-384", 384), ("-512", 512))),
    *((f"ViT-L-16-SigLIP2-{r}", f"vit_large_patch16_siglip_{r}", "L", None)
      for r in (256, 384, 512)),
    ("ViT-SO400M-14-SigLIP2", "vit_so400m_patch14_siglip_224", "SO400M", None),
    ("ViT-SO400M-14-SigLIP2-378", "vit_so400m_patch14_siglip_378", "SO400M", None),
    *((f"ViT-SO400M-16-SigLIP2-{r}", f"vit_so400m_patch16_siglip_{r}", "SO400M", None)
      for r in (256, 384, 512)),
    *((f"ViT-gopt-16-SigLIP2-{r}", f"vit_giantopt_patch16_siglip_{r}", "SO400M", 1536)
      for r in (256, 384))):
  _SIGLIP[_name] = _siglip(_trunk, _text, "SigLIP2", _embed, tokenizer=f"timm/{_name}")
for _name, _trunk, _text in (("ViT-B-16-SigLIP2-NaFlex", "naflexvit_base_patch16_siglip", "B"),
                             ("ViT-SO400M-16-SigLIP2-NaFlex", "naflexvit_so400m_patch16_siglip",
                              "SO400M")):
  _repo = {"B": "base", "SO400M": "so400m"}[_text]
  _SIGLIP[_name] = _siglip(_trunk, _text, "SigLIP2",
                           tokenizer=f"google/siglip2-{_repo}-patch16-naflex")
_SIGLIP.update({  # NLLB-CLIP with SigLIP image towers and the sigmoid loss's logit bias
    "nllb-clip-base-siglip": CLIPConfig(768, timm_trunk("vit_base_patch16_siglip_384"),
                                        _NLLB_600M, init_logit_bias=-10.0, custom_text=True),
    "nllb-clip-large-siglip": CLIPConfig(1152, timm_trunk("vit_so400m_patch14_siglip_384"),
                                         _NLLB_1_3B, init_logit_bias=-10.0, custom_text=True),
})
_BASE.update(_SIGLIP)

# MetaCLIP 2 "worldwide": CLIP ViTs whose causal text tower reads a multilingual vocabulary
# (XLM-V; mT5 for L-14) and pools the first end-of-sequence token (`eos_id`).
_XLMV = dict(hf_tokenizer_name="facebook/xlm-v-base", vocab_size=901629, pool_type="eos",
             eos_id=2)
_BASE.update({
    "ViT-H-14-worldwide": _clip(1024, _H_VISION, {**_H_TEXT, **_XLMV}),
    "ViT-H-14-worldwide-378": _clip(1024, {**_H_VISION, "image_size": 378}, {**_H_TEXT, **_XLMV}),
    "ViT-bigG-14-worldwide": _clip(1280, _BIGG_VISION,
                                   dict(width=1280, heads=20, layers=32, **_XLMV)),
    "ViT-bigG-14-worldwide-378": _clip(1280, {**_BIGG_VISION, "image_size": 378},
                                       dict(width=1280, heads=20, layers=32, **_XLMV)),
    "ViT-L-14-worldwide": _clip(768, dict(patch_size=14, width=1024, layers=24), dict(
        _L_TEXT, hf_tokenizer_name="google/mt5-base", vocab_size=250100, pool_type="eos",
        eos_id=1, tokenizer_kwargs=(("clean", "canonicalize"),))),
})
# CLIPA: no ln_pre, average pooling then the final LN; a bidirectional text tower over BERT's
# uncased WordPiece (open_clip strips the separator to id 0) that pools the last position.
_CLIPA_VISION = dict(no_ln_pre=True, pool_type="avg", final_ln_after_pool=True)
_CLIPA_TEXT = dict(context_length=32, vocab_size=32000, hf_tokenizer_name="bert-base-uncased",
                   tokenizer_kwargs=(("strip_sep_token", True),), pool_type="last", causal=False)
for _res, _suffix in ((224, ""), (336, "-336")):
  _BASE.update({
      f"ViT-L-14-CLIPA{_suffix}": _clip(768, dict(image_size=_res, patch_size=14, width=1024,
                                                  layers=24, **_CLIPA_VISION),
                                        {**_L_TEXT, **_CLIPA_TEXT}),
      f"ViT-H-14-CLIPA{_suffix}": _clip(1024, dict(_H_VISION, image_size=_res, **_CLIPA_VISION),
                                        {**_H_TEXT, **_CLIPA_TEXT}),
      f"ViT-bigG-14-CLIPA{_suffix}": _clip(
          1280, dict(_BIGG_VISION, image_size=_res, **_CLIPA_VISION),
          dict(width=1280, heads=20, layers=32, **_CLIPA_TEXT)),
  })


def _timm_clip(embed_dim: int, trunk: str, pool: str, text: tuple[int, int, int], proj: str = "head",
               context_length: int = 77, custom_text: bool = True, **text_kw) -> CLIPConfig:
  """A CLIP whose image tower is a timm trunk (EVA, PE, timm ViTs), as open_clip's JSON:
  `timm_pool` / `timm_proj` (null = "head"), the CLIP BPE text tower of (width, heads,
  layers)."""
  width, heads, layers = text
  return CLIPConfig(embed_dim, dataclasses.replace(timm_trunk(trunk), pool=pool, proj=proj),
                    TextConfig(context_length, width=width, heads=heads, layers=layers, **text_kw),
                    custom_text=custom_text)


_T_768, _T_1024, _T_1280 = (768, 12, 12), (1024, 16, 24), (1280, 20, 32)
_BASE.update({
    # EVA-CLIP (EVA01 / EVA02), class-token pooling and timm's classifier as the projection
    "EVA01-g-14": _timm_clip(1024, "eva_giant_patch14_224", "token", _T_768),
    "EVA01-g-14-plus": _timm_clip(1024, "eva_giant_patch14_224", "token", _T_1024),
    "EVA02-B-16": _timm_clip(512, "eva02_base_patch16_clip_224", "token", (512, 8, 12)),
    "EVA02-L-14": _timm_clip(768, "eva02_large_patch14_clip_224", "token", _T_768),
    "EVA02-L-14-336": _timm_clip(768, "eva02_large_patch14_clip_336", "token", _T_768),
    "EVA02-E-14": _timm_clip(1024, "eva02_enormous_patch14_clip_224", "token", _T_1024),
    "EVA02-E-14-plus": _timm_clip(1024, "eva02_enormous_patch14_clip_224", "token", _T_1280),
    # Perception Encoder core: MAP pooling, short text contexts
    "PE-Core-T-16-384": _timm_clip(512, "vit_pe_core_tiny_patch16_384", "map", (512, 8, 12),
                                   context_length=32),
    "PE-Core-S-16-384": _timm_clip(512, "vit_pe_core_small_patch16_384", "map", (512, 8, 12),
                                   context_length=32),
    "PE-Core-B-16": _timm_clip(1024, "vit_pe_core_base_patch16_224", "map", (1024, 16, 24),
                               context_length=32),
    "PE-Core-L-14-336": _timm_clip(1024, "vit_pe_core_large_patch14_336", "map", (1024, 16, 24),
                                   context_length=32),
    "PE-Core-bigG-14-448": _timm_clip(1280, "vit_pe_core_gigantic_patch14_448", "map",
                                      (1280, 20, 24), context_length=72),
    # MobileCLIP2-L-14: timm's CLIP ViT-L/14, a bidirectional text tower
    "MobileCLIP2-L-14": _timm_clip(768, "vit_large_patch14_clip_224", "token", _T_768,
                                   causal=False),
    "vit_medium_patch16_gap_256": _timm_clip(512, "vit_medium_patch16_gap_256", "avg",
                                             (512, 8, 12), proj="linear", custom_text=False),
    "vit_relpos_medium_patch16_cls_224": _timm_clip(512, "vit_relpos_medium_patch16_cls_224",
                                                    "token", (512, 8, 12), proj="linear",
                                                    custom_text=False),
    # MobileCLIP-B / MobileCLIP2-B: the hybrid ViT-B with a conv-BN stem
    **{name: _timm_clip(512, "vit_base_mci_224", "token", (512, 8, 12))
       for name in ("MobileCLIP-B", "MobileCLIP2-B")},
})

# A tiny SigLIP 2 for tests: not a timm model name, so its open_clip twin is built in the tests;
# the CLIP BPE vocabulary, so it runs without an HF tokenizer.
_BASE["ViT-T-16-SigLIP2-test"] = CLIPConfig(
    64, timm_trunk("vit_tiny_test_patch16_siglip_32"),
    dataclasses.replace(_SIGLIP["ViT-B-16-SigLIP2"].text, width=64, heads=2, layers=2,
                        vocab_size=49408, context_length=16, hf_tokenizer_name=None,
                        tokenizer_kwargs=()),
    init_logit_bias=-10.0, custom_text=True)

_BASE["ViT-T-16-SigLIP2-NaFlex-test"] = dataclasses.replace(
    _BASE["ViT-T-16-SigLIP2-test"], vision=timm_trunk("naflexvit_tiny_test_patch16_siglip"))

# not in open_clip: exported together with their JSON
CLIPJAX_ONLY = frozenset({"ViT-T-16-test", "ViT-S-16-tiny", "RN-T-test", "ViT-T-16-SigLIP2-test",
                          "ViT-T-16-SigLIP2-NaFlex-test", "ViT-B-16-SigLIP2-NaFlex",
                          "ViT-SO400M-16-SigLIP2-NaFlex"})
# open_clip ships a -quickgelu config for these (OpenAI / MetaCLIP / DFN weights); not for ViT-g-14.
_QUICKGELU = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-H-14-378",
              "ViT-bigG-14", "ViT-H-14-worldwide", "ViT-L-14-worldwide", "RN50", "RN101",
              "RN50x4", "RN50x16", "RN50x64")

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
  vision = dict(cfg["vision_cfg"])
  if "timm_model_name" in vision:
    vision_config: VisionConfig | TimmViTConfig = timm_tower(vision)
  else:
    extra = set(vision) - {f.name for f in dataclasses.fields(VisionConfig)}
    if extra:
      raise ValueError(f"vision_cfg keys not supported by clipjax: {sorted(extra)}")
    if isinstance(vision.get("layers"), (list, tuple)):
      vision["layers"] = tuple(vision["layers"])
    vision_config = VisionConfig(**vision)
  text = cfg["text_cfg"]
  if "hf_model_name" in text:
    extra = set(text) - {"hf_model_name", "hf_tokenizer_name", "hf_pooler_type", "hf_proj_type",
                         "hf_model_pretrained", "context_length"}
    if extra:
      raise ValueError(f"text_cfg keys not supported by clipjax: {sorted(extra)}")
    text_config: TextConfig | HFTextConfig = hf_text_config(text)
  else:
    text_config = TextConfig.from_openclip_text_cfg(text)
  return CLIPConfig(cfg["embed_dim"], vision_config, text_config,
                    quick_gelu=bool(cfg.get("quick_gelu", False)),
                    init_logit_bias=cfg.get("init_logit_bias"),
                    custom_text=bool(cfg.get("custom_text", False)))


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
  tokenizer = opts.get("hf_tokenizer_name")
  fields = dict(context_length=opts.get("context_length", 77),
                hf_tokenizer_name=None if tokenizer == name else tokenizer,  # as registered
                pooler=opts.get("hf_pooler_type", "mean_pooler"),
                proj_type=opts.get("hf_proj_type", "mlp"))
  return dataclasses.replace(known[name], **fields)
