"""Hugging Face tokenizers for HF text towers, giving open_clip's `HFTokenizer` ids.

open_clip cleans each text like its CLIP tokenizer without lower-casing (ftfy, html-unescape
twice, whitespace collapse; `clean='whitespace'`), then calls the HF tokenizer with
`max_length=context_length, padding='max_length', truncation=True`. Tokenizers load from a
local directory (`tokenizer.json` / sentencepiece files saved by `save_pretrained`); no hub.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from clipjax.text.tokenizer import clean_text


class HFTokenizer:
  """texts -> int32 [N, context_length] ids, padded with the tokenizer's pad id."""

  def __init__(self, path: str | os.PathLike, context_length: int = 77):
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"HF tokenizer directory {path!r} does not exist (clipjax loads HF "
                              f"tokenizers from a local directory written by save_pretrained)")
    from transformers import AutoTokenizer
    self.path, self.context_length = path, context_length
    self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    self.pad_token_id = self.tokenizer.pad_token_id

  def __getstate__(self):  # rebuilt in grain worker processes from the directory
    return {"path": self.path, "context_length": self.context_length}

  def __setstate__(self, state):
    self.__init__(state["path"], state["context_length"])

  def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = self.tokenizer([clean_text(t, lower=False) for t in texts], return_tensors="np",
                         max_length=context_length or self.context_length,
                         padding="max_length", truncation=True)
    return out["input_ids"].astype(np.int32)
