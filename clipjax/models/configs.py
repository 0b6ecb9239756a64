"""Architecture descriptions as frozen dataclasses, each with its open_clip model-config JSON.

A `CLIPConfig` and the open_clip JSON it writes (`to_openclip_json`) describe the same network,
which is what lets weights move between the two by renames and transposes alone. The named
architectures are in `registry.py`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from clipjax.pixels import OPENAI_MEAN, OPENAI_STD, normalize_on_device
from clipjax.text.hf_tokenizer import CLEAN_MODES, TOKENIZER_KWARGS


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """How the weights expect pixels (open_clip's `PreprocessCfg` of a pretrained tag or hub
  config): normalisation, resize filter and eval resize mode (shortest side + centre crop, or
  squash to the square). Training crops with RandomResizedCrop whatever the mode, as open_clip."""
  mean: tuple[float, ...] = OPENAI_MEAN
  std: tuple[float, ...] = OPENAI_STD
  interpolation: str = "bicubic"
  resize_mode: str = "shortest"

  @classmethod
  def from_openclip(cls, pre: dict, default: "ImagePreprocess | None" = None) -> "ImagePreprocess":
    """open_clip's preprocess dict (mean, std, interpolation, resize_mode; other keys such as
    size or fill_color ignored) over `default`."""
    base = dataclasses.asdict(default or cls())
    base.update({k: tuple(v) if k in ("mean", "std") else v for k, v in pre.items() if k in base})
    return cls(**base)

  def transform_kwargs(self) -> dict[str, Any]:
    """Keyword arguments of `clipjax.data.transforms.image_transform`."""
    return dataclasses.asdict(self)

  def normalize_on_device(self, images):
    """uint8 [..., 3] pipeline pixels -> normalised float32 (floats pass unchanged); for a
    NaFlex batch dict, its `pixel_values` [..., P·P·3] (the other entries pass unchanged)."""
    if not isinstance(images, Mapping):
      return normalize_on_device(images, self.mean, self.std)
    pixels = images["pixel_values"]
    flat = normalize_on_device(pixels.reshape(*pixels.shape[:-1], -1, 3), self.mean, self.std)
    return dict(images, pixel_values=flat.reshape(pixels.shape))


# open_clip's `_slpcfg`: every SigLIP / SigLIP 2 webli tag.
SIGLIP_PREPROCESS = ImagePreprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", "squash")
# SigLIP 2 NaFlex (transformers' Siglip2ImageProcessor): bilinear, aspect-preserving patch
# sequences (`clipjax.data.naflex`).
NAFLEX_PREPROCESS = ImagePreprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", "naflex")


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
  ls_init_value: float | None = None  # layer scale on every block's two branches (ViT-M-16-alt)
  # CLIPA: no LayerNorm before the blocks, the mean of the patch tokens ("avg") instead of the
  # class token ("tok"), and ln_post on the pooled vector rather than on every token.
  no_ln_pre: bool = False
  pool_type: str = "tok"
  final_ln_after_pool: bool = False
  # CoCa: `attn_pooler_queries` learned queries of width embed_dim attend over the tokens
  # (open_clip's AttentionalPooler); ln_post and pooling then act on the queries' outputs.
  attentional_pool: bool = False
  attn_pooler_queries: int = 256
  attn_pooler_heads: int = 8
  naflex = False  # NaFlex sequences are a SigLIP 2 trunk's (TimmViTConfig.naflex)

  POOL_TYPES = ("tok", "avg")

  def __post_init__(self):
    if self.pool_type not in self.POOL_TYPES:
      raise ValueError(f"vision pool_type {self.pool_type!r} is not supported; supported: "
                       f"{', '.join(self.POOL_TYPES)}")
    if not isinstance(self.attentional_pool, bool):  # open_clip's WIP 'parallel' / 'cascade'
      raise ValueError(f"vision attentional_pool {self.attentional_pool!r} is not supported; "
                       "supported: true or false (open_clip marks its string modes untested)")

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
class TimmViTConfig:
  """A timm ViT-family trunk as open_clip builds it (`timm_model_name`; `models/timm_vit.py`).
  The sizes and options are timm's for that name (registry `TIMM_TRUNKS`); open_clip builds
  the trunk at timm's default resolution, which is `image_size`. The defaults are SigLIP's:
  patch embedding with a bias, learned positions and no class token, pre-LN blocks with a
  fused `qkv` (LayerNorm eps 1e-6), a final LayerNorm, then the MAP head (one learned probe
  attending over the patches, `proj`, and a residual LayerNorm + MLP).

  The other families set: `class_token`; `pool` (timm's global pool: map / token / avg);
  `proj`, how open_clip maps the pooled feature to `embed_dim` (`timm_proj`: "none" = it is
  the embedding, "head" = timm's classifier `trunk.head` (`timm_proj: null`), "linear" =
  open_clip's bias-free `head.proj`); `norm_pre` (a LayerNorm before the blocks, the patch
  conv then unbiased); `fc_norm` (the LayerNorm after pooling instead of before; None =
  timm's default, on for avg pooling); `qkv` (QKV_LAYOUTS); `sub_ln` (EVA02's LayerNorms
  inside attention and MLP); `swiglu`; `post_norm` (EVA02-E); layer scale; 2-D rotary
  embedding (`rope_ref_grid` set: EVA02, PE; `models/rope.py`); the MAP head's own heads
  and MLP ratio (PE); `stem` (STEMS: timm's patch conv, or MobileCLIP-B's conv-BN stem);
  `pos_embed` (POS_EMBEDS: learned positions for every token, for the patches only — timm's
  `no_embed_class` — or none); `rel_pos_mlp` (the hidden width of timm's log-coordinate
  relative-position MLP, a bias on every block's attention logits).

  `naflex` (SigLIP 2 NaFlex, timm's `naflexvit_*_siglip`): patches embedded by a Linear layer
  from pixels already cut into [L, P·P·3] rows, the learned positions a [grid, grid] table
  resized to each image's own patch grid, padding patches masked (`models/naflex.py`).
  `image_size` is then grid · patch (the position table's resolution), not the input size;
  `max_num_patches` is the sequence length of the eval transform by default (transformers'
  processor default, 256)."""
  timm_model_name: str
  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  mlp_ratio: float = 4.0
  gelu_tanh: bool = False  # timm act_layer 'gelu_tanh' (else torch's exact GELU)
  naflex: bool = False
  max_num_patches: int = 256
  class_token: bool = False
  pool: str = "map"
  proj: str = "none"
  ln_eps: float = 1e-6
  norm_pre: bool = False
  fc_norm: bool | None = None
  qkv: str = "fused"
  qkv_bias: bool = True
  sub_ln: bool = False
  swiglu: bool = False
  post_norm: bool = False
  ls_init_value: float | None = None
  rope_ref_grid: int | None = None
  rope_offset: float = 0.0
  rope_xy: bool = False  # the rotary table's first half follows columns (PE), else rows
  map_heads: int | None = None
  map_mlp_ratio: float | None = None
  stem: str = "patch"
  pos_embed: str = "all"
  rel_pos_mlp: int | None = None

  is_resnet = False
  POOLS = ("map", "token", "avg")
  PROJS = ("none", "head", "linear")
  STEMS = ("patch", "mci")  # mci: timm's ConvStem (4x4/4, 2x2/2 conv-BN-GELU, 2x2/2 conv)
  POS_EMBEDS = ("all", "patches", "none")
  # fused: one `qkv` with a bias; eva: `qkv` without one plus `q_bias`, `v_bias` (EVA01,
  # EVA02-E); split: `q_proj`, `k_proj` (no bias), `v_proj` (EVA02).
  QKV_LAYOUTS = ("fused", "eva", "split")

  def __post_init__(self):
    for field, allowed in (("pool", self.POOLS), ("proj", self.PROJS),
                           ("qkv", self.QKV_LAYOUTS), ("stem", self.STEMS),
                           ("pos_embed", self.POS_EMBEDS)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"timm trunk {self.timm_model_name}: {field} "
                         f"{getattr(self, field)!r} is not one of {', '.join(allowed)}")
    if self.pool == "token" and not self.class_token:
      raise ValueError(f"timm trunk {self.timm_model_name}: token pooling needs a class token")

  @property
  def mlp_width(self) -> int:
    return int(self.width * self.mlp_ratio)  # timm's Mlp: int(dim * mlp_ratio), e.g. 4304

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size  # a VALID conv: SO400M-14 at 384 px sees 27 x 27

  @property
  def prefix_tokens(self) -> int:
    return int(self.class_token)

  @property
  def uses_fc_norm(self) -> bool:
    return self.pool == "avg" if self.fc_norm is None else self.fc_norm

  @property
  def is_siglip(self) -> bool:
    """A SigLIP / SigLIP 2 trunk (SigLIP's pixel preprocessing; Hugging Face's SiglipModel)."""
    return "siglip" in self.timm_model_name


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """open_clip's `TextTransformer`. The CLIP defaults: causal mask, end-of-text (`argmax`)
  pooling, a bias-free projection matrix, LayerNorm eps 1e-5, exact GELU. SigLIP towers are
  bidirectional (`no_causal_mask`), pool the `last` position, project with a Linear
  (`proj_bias`), use eps 1e-6 and, for SigLIP 2, tanh-approximated GELU."""
  context_length: int = 77
  vocab_size: int = 49408
  width: int = 512
  heads: int = 8
  layers: int = 12
  mlp_ratio: float = 4.0
  causal: bool = True
  # argmax: the end-of-text token (the CLIP BPE's largest id); eos: the first `eos_id`
  # (MetaCLIP 2's XLM-V / mT5 vocabularies); last / first: that position.
  pool_type: str = "argmax"
  eos_id: int = 2
  proj_type: str = "linear"  # or "none": no projection (text width == embed_dim)
  proj_bias: bool = False
  ln_eps: float = 1e-5
  gelu_tanh: bool = False
  hf_tokenizer_name: str | None = None  # an HF tokenizer instead of the CLIP BPE
  ls_init_value: float | None = None  # layer scale on every block's two branches
  tokenizer_kwargs: tuple[tuple[str, Any], ...] = ()  # e.g. (("clean", "canonicalize"),)

  POOL_TYPES = ("argmax", "eos", "last", "first")

  def __post_init__(self):
    if self.pool_type not in self.POOL_TYPES:
      raise ValueError(f"text pool_type {self.pool_type!r} is not supported; supported: "
                       f"{', '.join(self.POOL_TYPES)}")
    if self.proj_type not in ("linear", "none"):
      raise ValueError(f"text proj_type must be 'linear' or 'none', got {self.proj_type!r}")
    kwargs = dict(self.tokenizer_kwargs)
    if set(kwargs) - set(TOKENIZER_KWARGS) or kwargs.get("clean", "whitespace") not in CLEAN_MODES:
      raise ValueError(f"text tokenizer_kwargs {kwargs} not supported: only clean (one of "
                       f"{', '.join(CLEAN_MODES)}) and strip_sep_token")

  @property
  def mlp_width(self) -> int:
    return int(self.width * self.mlp_ratio)

  @property
  def tokenizer_dir(self) -> str | None:
    """None: the CLIP BPE; else the HF tokenizer (a directory or an HF cache name)."""
    return self.hf_tokenizer_name

  @property
  def trimmable(self) -> bool:
    """Padding columns after the last real token can be cut without changing the output:
    true for causal towers (no position attends to later padding) that pool a real token; a
    bidirectional tower, or one pooling the `last` position, reads the padding too."""
    return self.causal and self.pool_type != "last"

  def to_openclip_text_cfg(self) -> dict:
    out: dict[str, Any] = dict(context_length=self.context_length, vocab_size=self.vocab_size,
                               width=self.width, heads=self.heads, layers=self.layers)
    if self.mlp_ratio != 4.0:
      out["mlp_ratio"] = self.mlp_ratio
    if self.hf_tokenizer_name:
      out["hf_tokenizer_name"] = self.hf_tokenizer_name
    if self.tokenizer_kwargs:
      out["tokenizer_kwargs"] = dict(self.tokenizer_kwargs)
    if not self.causal:
      out["no_causal_mask"] = True
    if self.pool_type != "argmax":
      out["pool_type"] = self.pool_type
    if self.pool_type == "eos":
      out["eos_id"] = self.eos_id
    if self.proj_type != "linear":
      out["proj_type"] = self.proj_type
    if self.proj_bias:
      out["proj_bias"] = True
    if self.ls_init_value is not None:
      out["ls_init_value"] = self.ls_init_value
    if self.ln_eps != 1e-5:
      out["norm_kwargs"] = {"eps": self.ln_eps}
    if self.gelu_tanh:
      out["act_kwargs"] = {"approximate": "tanh"}
    return out

  @classmethod
  def from_openclip_text_cfg(cls, text_cfg: dict) -> "TextConfig":
    """The inverse of `to_openclip_text_cfg`; an unknown key or option is a ValueError."""
    t = dict(text_cfg)
    plain = {f.name for f in dataclasses.fields(cls)} - {
        "causal", "pool_type", "proj_type", "proj_bias", "ln_eps", "gelu_tanh", "tokenizer_kwargs"}
    mapped = {"no_causal_mask", "pool_type", "proj_type", "proj_bias", "norm_kwargs",
              "act_kwargs", "tokenizer_kwargs"}
    extra = set(t) - plain - mapped
    if extra:
      raise ValueError(f"text_cfg keys not supported by clipjax: {sorted(extra)}")
    norm, act = t.pop("norm_kwargs", {}), t.pop("act_kwargs", {})
    if set(norm) - {"eps"} or set(act) - {"approximate"} or act.get("approximate",
                                                                      "tanh") != "tanh":
      raise ValueError(f"text_cfg norm_kwargs {norm} / act_kwargs {act} not supported by "
                       "clipjax (only eps, approximate='tanh')")
    return cls(**{k: v for k, v in t.items() if k in plain},
               causal=not t.get("no_causal_mask", False),
               pool_type=t.get("pool_type", "argmax"), proj_type=t.get("proj_type", "linear"),
               proj_bias=bool(t.get("proj_bias", False)), ln_eps=norm.get("eps", 1e-5),
               gelu_tanh="approximate" in act,
               tokenizer_kwargs=tuple(sorted(t.get("tokenizer_kwargs", {}).items())))


@dataclasses.dataclass(frozen=True)
class HFTextConfig:
  """A Hugging Face encoder as the text tower (open_clip's `text_cfg.hf_model_name`).

  `hf_model_name` is what open_clip's JSON names (a hub id or a local directory with the HF
  `config.json` and tokenizer files); the remaining fields are that config's hyper-parameters,
  so the architecture is known without the hub (`from_hf_config` reads them from a config).
  """
  hf_model_name: str
  model_type: str  # roberta | xlm-roberta | t5 | mt5 | m2m_100
  vocab_size: int
  width: int
  heads: int
  layers: int
  mlp_width: int
  pad_token_id: int
  layer_norm_eps: float
  context_length: int = 77  # tokenizer max_length (open_clip's text_cfg.context_length)
  hf_tokenizer_name: str | None = None
  pooler: str = "mean_pooler"  # or cls_last_hidden_state_pooler / cls_pooler (the first token)
  proj_type: str | None = "mlp"  # open_clip's default; linear; None: identity
  max_positions: int = 514  # RoBERTa position table (padding_idx + 1 + longest text)
  type_vocab_size: int = 1
  head_dim: int = 64  # T5 d_kv
  gated_act: bool = True  # T5 v1.1 / mT5 "gated-gelu"; False: original T5 "relu"
  relative_buckets: int = 32
  relative_max_distance: int = 128
  activation: str = "relu"  # M2M100's activation_function (NLLB: relu)
  scale_embedding: bool = True  # M2M100: token embeddings times sqrt(width)

  FAMILIES = {"roberta": "roberta", "xlm-roberta": "roberta", "t5": "t5", "mt5": "t5",
              "m2m_100": "m2m_100"}
  POOLERS = ("mean_pooler", "cls_last_hidden_state_pooler", "cls_pooler")
  ACTIVATIONS = ("relu", "gelu")

  def __post_init__(self):
    if self.model_type not in self.FAMILIES:
      raise ValueError(f"HF text tower type {self.model_type!r} is not supported; supported: "
                       f"{', '.join(self.FAMILIES)}")
    if self.pooler not in self.POOLERS:
      raise ValueError(f"hf_pooler_type {self.pooler!r} is not supported; supported: "
                       f"{', '.join(self.POOLERS)}")
    if self.proj_type not in ("mlp", "linear", None):
      raise ValueError(f"hf_proj_type must be mlp, linear or None, got {self.proj_type!r}")
    if self.pooler == "cls_pooler" and self.family == "roberta":
      # open_clip then adds RoBERTa's pooler layer (dense + tanh), which clipjax does not build
      raise ValueError("hf_pooler_type 'cls_pooler' on a RoBERTa tower is not supported; use "
                       "cls_last_hidden_state_pooler or mean_pooler")
    if self.activation not in self.ACTIVATIONS:
      raise ValueError(f"M2M100 activation_function {self.activation!r} is not supported; "
                       f"supported: {', '.join(self.ACTIVATIONS)}")

  trimmable = True  # padding is masked out of attention and pooling
  tokenizer_kwargs = ()  # open_clip's HFTokenizer defaults

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
                  pad_token_id=hf.get("pad_token_id", 0 if cls.FAMILIES[kind] == "t5" else 1),
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
    if kind == "m2m_100":
      return cls(**common, width=hf["d_model"], heads=hf["encoder_attention_heads"],
                 layers=hf["encoder_layers"], mlp_width=hf["encoder_ffn_dim"],
                 layer_norm_eps=1e-5, max_positions=hf["max_position_embeddings"],
                 activation=hf.get("activation_function", "relu"),
                 scale_embedding=bool(hf.get("scale_embedding", True)))  # M2M100Config default
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
  """`custom_text`: open_clip's CustomTextCLIP, whose text tower sits under `text.` (always
  so for HF text towers; the SigLIP configs set it for their own TextTransformer).
  `preprocess`: the loaded weights' pixel preprocessing when their tag or hub config names it
  (not part of open_clip's model JSON); None = the tower family's (`image_preprocess`)."""
  embed_dim: int
  vision: VisionConfig | TimmViTConfig
  text: TextConfig | HFTextConfig
  quick_gelu: bool = False
  init_logit_bias: float | None = None  # SigLIP-style models carry a learnable logit bias
  custom_text: bool = False
  preprocess: ImagePreprocess | None = None

  @property
  def image_preprocess(self) -> ImagePreprocess:
    """The pixel preprocessing of these weights: `preprocess`, else SigLIP's for SigLIP
    trunks and OpenAI's for the rest (open_clip's defaults for the tags of each family)."""
    if self.preprocess is not None:
      return self.preprocess
    if self.vision.naflex:
      return NAFLEX_PREPROCESS
    siglip = isinstance(self.vision, TimmViTConfig) and self.vision.is_siglip
    return SIGLIP_PREPROCESS if siglip else ImagePreprocess()

  @property
  def naflex_patches(self) -> int | None:
    """A NaFlex image tower's default sequence length (patches per image); None: the tower
    takes fixed-size images."""
    return self.vision.max_num_patches if self.vision.naflex else None

  def transform_options(self) -> dict[str, Any]:
    """The keyword options of `clipjax.data.naflex.make_image_transform` for these weights:
    the preprocessing, plus the patch size and default sequence length of a NaFlex tower."""
    options = self.image_preprocess.transform_kwargs()
    if self.vision.naflex:
      options.update(patch_size=self.vision.patch_size,
                     max_num_patches=self.vision.max_num_patches)
    return options

  def architecture(self) -> "CLIPConfig":
    """The network alone, without the weights' preprocessing (compares with the registry)."""
    return dataclasses.replace(self, preprocess=None)

  def replace(self, **kw: Any) -> "CLIPConfig":
    """Returns a copy; `vision=`/`text=` accept dicts of field overrides."""
    for key in ("vision", "text"):
      if isinstance(kw.get(key), dict):
        kw[key] = dataclasses.replace(getattr(self, key), **kw[key])
    return dataclasses.replace(self, **kw)

  @property
  def text_prefix(self) -> str:
    """The text tower's open_clip key prefix: "text." for CustomTextCLIP, else ""."""
    return "text." if self.custom_text or isinstance(self.text, HFTextConfig) else ""

  def to_openclip_json(self) -> dict:
    """The open_clip model-config dict (`model_configs/<name>.json`) for this architecture."""
    v, t = self.vision, self.text
    if isinstance(v, TimmViTConfig):
      vision: dict[str, Any] = dict(image_size=v.image_size, timm_model_name=v.timm_model_name,
                                    timm_model_pretrained=False, timm_pool=v.pool,
                                    timm_proj=None if v.proj == "head" else v.proj)
    else:
      vision = dict(image_size=v.image_size, layers=list(v.layers) if v.is_resnet else v.layers,
                    width=v.width, patch_size=v.patch_size)
      if v.head_width != 64:
        vision["head_width"] = v.head_width
      if v.mlp_ratio != 4.0:
        vision["mlp_ratio"] = v.mlp_ratio
      if v.ls_init_value is not None:
        vision["ls_init_value"] = v.ls_init_value
      for flag in ("no_ln_pre", "final_ln_after_pool"):
        if getattr(v, flag):
          vision[flag] = True
      if v.pool_type != "tok":
        vision["pool_type"] = v.pool_type
      if v.attentional_pool:
        vision.update(attentional_pool=True, attn_pooler_queries=v.attn_pooler_queries,
                      attn_pooler_heads=v.attn_pooler_heads)
    text = t.to_openclip_text_cfg()
    out: dict[str, Any] = dict(embed_dim=self.embed_dim)
    if self.quick_gelu:
      out["quick_gelu"] = True
    if self.init_logit_bias is not None:
      out["init_logit_bias"] = self.init_logit_bias
    if self.custom_text:
      out["custom_text"] = True
    out.update(vision_cfg=vision, text_cfg=text)
    return out
