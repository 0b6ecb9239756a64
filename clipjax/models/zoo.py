"""The zoo table (docs/models.md): every architecture the registry knows, its family, size,
pretrained tags, Hugging Face class and the test that checks it against open_clip.

`scripts/update_models_doc.py` writes the file (counting parameters from abstract shapes);
`tests/models/test_zoo_doc.py` checks that it matches the registry.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from clipjax.models.configs import CLIPConfig, HFTextConfig, TimmViTConfig
from clipjax.models.registry import CLIPJAX_ONLY, MODEL_CONFIGS

_TIMM = (("eva_giant", "EVA01"), ("eva02_", "EVA02"), ("vit_pe_core", "Perception Encoder"),
         ("_mci_", "MobileCLIP hybrid ViT"), ("relpos", "timm ViT, relative positions"))
_HF_TEXT = {"roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa", "t5": "T5", "mt5": "mT5",
            "m2m_100": "NLLB (M2M100)"}
# family -> the test module comparing it with open_clip at reduced depth
_CHECKED_BY = {"ResNet": "test_resnet.py", "SigLIP": "test_siglip.py",
               "SigLIP 2 NaFlex": "test_naflex.py", "ViT": "test_openclip_parity.py",
               "CLIPA ViT": "test_openclip_parity.py"}


def image_family(cfg: CLIPConfig) -> str:
  v = cfg.vision
  if isinstance(v, TimmViTConfig):
    if v.naflex:
      return "SigLIP 2 NaFlex"
    if v.is_siglip:
      return "SigLIP"
    return next((family for key, family in _TIMM if key in v.timm_model_name), "timm ViT")
  if v.is_resnet:
    return "ResNet"
  return "CLIPA ViT" if v.no_ln_pre else "ViT"


def text_family(cfg: CLIPConfig) -> str:
  t = cfg.text
  if isinstance(t, HFTextConfig):
    return _HF_TEXT[t.model_type]
  kind = "causal" if t.causal else "bidirectional"
  vocab = "CLIP BPE" if t.tokenizer_dir is None else t.tokenizer_dir.rsplit("/", 1)[-1]
  return f"{kind}, {vocab}"


def checked_by(cfg: CLIPConfig) -> str:
  """The test module that compares the family with open_clip (HF text towers: test_hf_text)."""
  family = image_family(cfg)
  module = _CHECKED_BY.get(family, "test_timm_trunks.py")
  if isinstance(cfg.text, HFTextConfig):
    module += ", test_hf_text.py"
  return module


def zoo_rows(param_counts: Mapping[str, int], tags: Mapping[str, Iterable[str]],
             names: Iterable[str] | None = None) -> list[dict]:
  """One row per open_clip architecture in the registry (clipjax's test configs left out), or
  per name of `names`, sorted."""
  from clipjax.convert.hf import hf_model_class
  rows = []
  for name in sorted(MODEL_CONFIGS if names is None else names, key=str.lower):
    if name in CLIPJAX_ONLY:
      continue
    cfg = MODEL_CONFIGS[name]
    rows.append(dict(name=name, image=image_family(cfg), text=text_family(cfg),
                     params=param_counts[name], size=cfg.vision.image_size,
                     tags=", ".join(tags.get(name, ())) or "-",
                     hf=hf_model_class(cfg) or "-", checked=checked_by(cfg)))
  return rows


def _count(n: int) -> str:
  return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


HEADER = """# The model zoo

Every open_clip architecture clipjax builds, by open_clip's name: `create_model(name)`,
`load_openclip(name, pretrained=tag)` (or `hf-hub:`, `local-dir:`, a file with its JSON), and
`export_openclip` back. Generated from the registry by `python scripts/update_models_doc.py`;
`tests/models/test_zoo_doc.py` fails when it is out of date.

- **Parameters**: counted from the Flax parameter shapes (BatchNorm statistics included).
- **Tags**: open_clip's pretrained tags for the name (`third_party/openclip_pretrained`).
- **HF class**: what `export_hf` writes (`-`: transformers 5 has no class for it; use
  `export_openclip`).
- **Checked by**: the test module under `tests/models/` that compares the family with
  open_clip / timm / transformers on random weights at 2 blocks per tower and the published
  widths, and loads the export back strictly. Architectures over ~300 M parameters are also
  checked by the shape of every parameter against open_clip built on PyTorch's meta device.

| Architecture | Image tower | Text tower | Parameters | Image size | Tags | HF class | Checked by |
|---|---|---|---|---|---|---|---|
"""


def render(rows: list[dict], unsupported: Iterable[str]) -> str:
  """docs/models.md: the header, a row per architecture, then the architectures with open_clip
  weights that clipjax cannot build yet."""
  lines = [f"| `{r['name']}` | {r['image']} | {r['text']} | {_count(r['params'])} | {r['size']} "
           f"| {r['tags']} | {r['hf']} | {r['checked']} |" for r in rows]
  missing = ", ".join(f"`{a}`" for a in sorted(unsupported, key=str.lower))
  return (HEADER + "\n".join(lines) + "\n\n## Not yet supported\n\nopen_clip architectures with "
          f"pretrained weights that clipjax cannot build yet (convolutional and hybrid trunks, "
          f"CoCa): {missing}.\n")
