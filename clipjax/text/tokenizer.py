"""CLIP BPE tokenizer giving exactly open_clip's ids; BPE merges run in Rust (`tokenizers`).

Text cleaning is open_clip's `clean='lower'` pipeline, run in Python so its semantics are
Python's: `ftfy.fix_text`, `html.unescape` twice, strip, whitespace collapse (`str.split`), then
`str.lower`. ftfy is slow and is the identity on printable ASCII without `&`, so such strings
skip it (checked against ftfy in the tests).

Words are open_clip's regex matches (the `regex` module, case-insensitive, as open_clip). No
match can contain a space, so after cleaning the matches of a text are the matches of its
space-separated chunks in order: ids are cached per chunk, which makes tokenizing a caption
corpus mostly dictionary look-ups (the speed-up measured in `scripts/bench_tokenizer.py`).
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import re
from typing import Sequence

import numpy as np
import regex

SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
DEFAULT_CONTEXT_LENGTH = 77
_SPECIAL = {"<start_of_text>": SOT_ID, "<end_of_text>": EOT_ID}
_WORDS = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
                       r"[^\s\p{L}\p{N}]+", regex.IGNORECASE)
_NEEDS_FTFY = re.compile(r"[^\x20-\x25\x27-\x7e\t\n]")  # anything but printable ASCII, or &
_CACHE_LIMIT = 1 << 20  # chunks; the cache is cleared when it grows past this


def default_bpe_path():
  return importlib.resources.files("clipjax.third_party") / "openai_clip_bpe" / \
      "bpe_simple_vocab_16e6.txt.gz"


def clean_text(text: str, lower: bool = True) -> str:
  """open_clip's `_clean_lower` (`lower=False`: `_clean_whitespace`, its HF tokenizers'): ftfy,
  double html-unescape, whitespace collapse, lower case."""
  if _NEEDS_FTFY.search(text):
    import ftfy  # slow to import and rarely needed
    text = ftfy.fix_text(text)
  text = " ".join(html.unescape(html.unescape(text)).strip().split())
  return text.lower() if lower else text


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP reversible map from bytes to printable characters (printable bytes first)."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
               *range(ord("®"), ord("ÿ") + 1)]
  table = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


@functools.lru_cache(maxsize=4)
def _build_bpe(bpe_path: str):
  """The CLIP vocabulary (49,408 entries) and merges as a Rust `tokenizers` BPE model."""
  from tokenizers import Tokenizer, decoders, models

  with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
  byte_chars = list(byte_to_unicode().values())
  vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
  vocab = {tok: i for i, tok in enumerate(vocab_list + list(_SPECIAL))}
  if len(vocab) != 49408 or any(vocab[k] != v for k, v in _SPECIAL.items()):
    raise ValueError(f"{bpe_path} is not the CLIP BPE merges file (vocabulary of {len(vocab)})")
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
  tok.decoder = decoders.ByteLevel()
  return tok


class Tokenizer:
  """Callable like `open_clip.get_tokenizer('ViT-B-32')`, returning int32 numpy arrays.

  `tokenizer(texts)` -> int32 [N, context_length]: start token, BPE ids, end token, zero
  padding. Texts longer than the context are truncated keeping the end token (open_clip's
  behaviour); pass `truncate=False` to get an error instead.
  """

  def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, bpe_path: str | None = None):
    if context_length < 2:
      raise ValueError(f"context_length must be >= 2 (start + end token), got {context_length}")
    self.context_length = context_length
    self._tok = _build_bpe(str(bpe_path or default_bpe_path()))
    self._model = self._tok.model
    self._chunk_ids: dict[str, list[int]] = {}
    self.vocab_size = self._tok.get_vocab_size()
    self.sot_token_id, self.eot_token_id = SOT_ID, EOT_ID

  def _encode_chunk(self, chunk: str) -> list[int]:
    b2u = byte_to_unicode()
    ids = []
    for word in _WORDS.findall(chunk):
      special = _SPECIAL.get(word)
      if special is not None:
        ids.append(special)
      else:
        ids.extend(t.id for t in self._model.tokenize("".join(b2u[b] for b in word.encode())))
    if len(self._chunk_ids) >= _CACHE_LIMIT:
      self._chunk_ids.clear()
    self._chunk_ids[chunk] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    """BPE ids of one text, without start/end tokens or truncation."""
    ids: list[int] = []
    cache = self._chunk_ids
    for chunk in clean_text(text).split(" "):
      chunk_ids = cache.get(chunk)
      ids.extend(self._encode_chunk(chunk) if chunk_ids is None else chunk_ids)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    """Inverse of `encode` up to cleaning; drops padding and start/end tokens."""
    ids = [int(i) for i in ids if int(i) not in (PAD_ID, SOT_ID, EOT_ID)]
    return self._tok.decode(ids, skip_special_tokens=False).replace("</w>", " ").strip()

  def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
               truncate: bool = True) -> np.ndarray:
    if isinstance(texts, str):
      texts = [texts]
    ctx = context_length or self.context_length
    out = np.zeros((len(texts), ctx), np.int32)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"text {i} is a {type(text).__name__}, expected str")
      ids = self.encode(text)
      if len(ids) > ctx - 2:
        if not truncate:
          raise ValueError(f"text {i} has {len(ids) + 2} tokens, more than the context length "
                           f"{ctx}: {text[:80]!r}")
        ids = ids[:ctx - 2]
      out[i, 0] = SOT_ID
      out[i, 1:1 + len(ids)] = ids
      out[i, 1 + len(ids)] = EOT_ID
    return out

