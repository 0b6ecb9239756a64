"""The one place that picks a tokenizer: the CLIP BPE, or the HF tokenizer an HF text tower or
a SigLIP tower names (a local directory, or a name in the Hugging Face cache). Which one an
architecture uses is `clipjax.models.tokenizers.get_tokenizer`."""
from __future__ import annotations

from typing import Any, Mapping

from clipjax.text.hf_tokenizer import HFTokenizer
from clipjax.text.tokenizer import Tokenizer


def make_tokenizer(context_length: int, hf_dir: str | None = None,
                   options: Mapping[str, Any] | tuple = ()) -> Tokenizer | HFTokenizer:
  """The CLIP BPE tokenizer, or the HF tokenizer `hf_dir` (a directory or an HF cache name)
  with open_clip's `tokenizer_kwargs` `options` (`clean`: whitespace | lower | canonicalize;
  `strip_sep_token`), a mapping or (key, value) pairs."""
  if hf_dir:
    return HFTokenizer(hf_dir, context_length, **dict(options))
  return Tokenizer(context_length)
