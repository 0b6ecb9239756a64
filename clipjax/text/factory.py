"""The one place that picks a tokenizer: the CLIP BPE, or for an HF text tower the HF
tokenizer saved in a local directory."""
from __future__ import annotations

from clipjax.models.registry import CLIPConfig, get_model_config
from clipjax.text.hf_tokenizer import HFTokenizer
from clipjax.text.tokenizer import Tokenizer


def make_tokenizer(context_length: int, hf_dir: str | None = None) -> Tokenizer | HFTokenizer:
  """The CLIP BPE tokenizer, or the HF tokenizer saved in the directory `hf_dir`."""
  if hf_dir:
    return HFTokenizer(hf_dir, context_length)
  return Tokenizer(context_length)


def get_tokenizer(arch: str | CLIPConfig = "ViT-B-32", context_length: int | None = None):
  """The tokenizer of an architecture (name or CLIPConfig), as open_clip's `get_tokenizer`."""
  text = get_model_config(arch).text
  return make_tokenizer(context_length or text.context_length,
                        getattr(text, "tokenizer_dir", None))
