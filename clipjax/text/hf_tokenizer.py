"""Hugging Face tokenizers (HF text towers, SigLIP), giving open_clip's `HFTokenizer` ids.

open_clip cleans each text first: `whitespace` (its default: ftfy, html-unescape twice,
whitespace collapse, case kept), `lower` (the same, lower-cased) or `canonicalize` (SigLIP,
big_vision's: the basic clean, `_` to space, ASCII punctuation removed, lower case, whitespace
collapsed); then it calls the HF tokenizer with `max_length=context_length,
padding='max_length', truncation=True`; with `strip_sep_token` (CLIPA's BERT tokenizer) every
separator id becomes 0 afterwards. Tokenizers load from a local directory
(`save_pretrained` files) or by name from the Hugging Face cache; never from the network.
"""
from __future__ import annotations

import os
import string
from typing import Sequence

import numpy as np

from clipjax.text.tokenizer import clean_text

CLEAN_MODES = ("whitespace", "lower", "canonicalize")
# open_clip's `tokenizer_kwargs` that clipjax's HFTokenizer takes (the only ones its configs use).
TOKENIZER_KWARGS = ("clean", "strip_sep_token")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text: str) -> str:
  """open_clip's `clean='canonicalize'` (SigLIP): lower case, no punctuation, single spaces."""
  text = clean_text(text, lower=False).replace("_", " ").translate(_PUNCTUATION).lower()
  return " ".join(text.split())


def clean(text: str, mode: str) -> str:
  if mode == "canonicalize":
    return canonicalize(text)
  return clean_text(text, lower=mode == "lower")


class HFTokenizer:
  """texts -> int32 [N, context_length] ids, padded with the tokenizer's pad id."""

  def __init__(self, path: str | os.PathLike, context_length: int = 77,
               clean: str = "whitespace", strip_sep_token: bool = False):
    path = os.fspath(path)
    if clean not in CLEAN_MODES:
      raise ValueError(f"tokenizer clean mode must be one of {', '.join(CLEAN_MODES)}, got "
                       f"{clean!r}")
    from transformers import AutoTokenizer
    self.path, self.context_length = path, context_length
    self.clean, self.strip_sep_token = clean, bool(strip_sep_token)
    try:  # a directory, or a hub name already in the HF cache (no network)
      self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
      from huggingface_hub.constants import HF_HUB_CACHE
      raise FileNotFoundError(
          f"HF tokenizer {path!r} is neither a directory with tokenizer files nor in the "
          f"Hugging Face cache {HF_HUB_CACHE} ({type(e).__name__}); save it with "
          f"save_pretrained, or `hf download {path}` on a machine with access and copy the "
          "cache") from None
    if self.strip_sep_token and self.tokenizer.sep_token_id is None:
      raise ValueError(f"HF tokenizer {path!r} has no separator token to strip "
                       "(strip_sep_token=True)")
    self.pad_token_id = self.tokenizer.pad_token_id

  def __getstate__(self):  # rebuilt in grain worker processes from the directory
    return {"path": self.path, "context_length": self.context_length, "clean": self.clean,
            "strip_sep_token": self.strip_sep_token}

  def __setstate__(self, state):
    self.__init__(**state)

  def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = self.tokenizer([clean(t, self.clean) for t in texts], return_tensors="np",
                         max_length=context_length or self.context_length,
                         padding="max_length", truncation=True)
    ids = out["input_ids"].astype(np.int32)
    if self.strip_sep_token:  # CLIPA: the separator becomes id 0 (BERT's pad)
      ids[ids == self.tokenizer.sep_token_id] = 0
    return ids
