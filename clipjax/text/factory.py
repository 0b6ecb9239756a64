"""The one place that picks a tokenizer: the CLIP BPE, or the HF tokenizer an HF text tower or
a SigLIP tower names (a local directory, or a name in the Hugging Face cache)."""
from __future__ import annotations

from clipjax.models.configs import CLIPConfig
from clipjax.models.registry import get_model_config
from clipjax.text.hf_tokenizer import HFTokenizer
from clipjax.text.tokenizer import Tokenizer


def make_tokenizer(context_length: int, hf_dir: str | None = None,
                   clean: str = "whitespace") -> Tokenizer | HFTokenizer:
  """The CLIP BPE tokenizer, or the HF tokenizer `hf_dir` (a directory or an HF cache name)
  with open_clip's text cleaning `clean` (whitespace | lower | canonicalize)."""
  if hf_dir:
    return HFTokenizer(hf_dir, context_length, clean)
  return Tokenizer(context_length)


def get_tokenizer(arch: str | CLIPConfig = "ViT-B-32", context_length: int | None = None):
  """The tokenizer of an architecture (name or CLIPConfig), as open_clip's `get_tokenizer`."""
  text = get_model_config(arch).text
  return make_tokenizer(context_length or text.context_length, text.tokenizer_dir,
                        text.tokenizer_clean)
