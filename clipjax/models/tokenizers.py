"""The tokenizer an architecture was trained with, as open_clip's `get_tokenizer`."""
from __future__ import annotations

from clipjax.models.configs import CLIPConfig
from clipjax.models.registry import get_model_config
from clipjax.text.factory import make_tokenizer
from clipjax.text.hf_tokenizer import HFTokenizer
from clipjax.text.tokenizer import Tokenizer


def get_tokenizer(arch: str | CLIPConfig = "ViT-B-32",
                  context_length: int | None = None) -> Tokenizer | HFTokenizer:
  """The tokenizer of an architecture (name or CLIPConfig): the CLIP BPE, or the HF tokenizer
  its text tower names, with the architecture's context length unless `context_length`."""
  text = get_model_config(arch).text
  return make_tokenizer(context_length or text.context_length, text.tokenizer_dir,
                        text.tokenizer_kwargs)
