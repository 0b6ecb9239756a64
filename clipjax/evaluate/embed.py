"""Embedding functions of a model and batched embedding of sources and text lists.

Evaluation code only sees `Encoders`: images and texts in, unit-norm float32 numpy out, so
any tower pair (CLIP, DRAFT's adapted text tower, CLIP-3Modal's dialogue tower, a blend) is
evaluated by the same functions.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from clipjax.data.pipeline import PrepareExample, build_dataset
from clipjax.data.records import BAD_REASONS
from clipjax.data.streams import Encoding
from clipjax.data.views import MapRecords
from clipjax.models.clip import l2_normalize
from clipjax.models.text import trim_padding
from clipjax.text.factory import make_tokenizer


@dataclasses.dataclass(frozen=True)
class Encoders:
  """encode_images: [B, H, W, 3] uint8 pixels or normalised float32 (a NaFlex tower: the batch
  dict of `clipjax.data.naflex`) -> [B, D]; encode_texts: list of n str -> [n, D] (both
  unit-norm numpy). `key` names the model and its weights (caches, ANN indexes)."""
  encode_images: Callable[[np.ndarray], np.ndarray]
  encode_texts: Callable[[Sequence[str]], np.ndarray]
  image_size: int
  embed_dim: int
  key: str
  image_key: str = ""  # names the image tower alone: equal keys share image embeddings
  preprocess: tuple = ()  # image_transform's options as (name, value) pairs; () = OpenAI's


def params_fingerprint(params: Any) -> str:
  """sha256 over parameter paths, shapes and bytes (16 hex digits)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    h.update(leaf.tobytes())
  return h.hexdigest()[:16]


def unit_rows(x) -> np.ndarray:
  """float32 rows scaled to unit L2 norm (zero rows stay zero)."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)



def make_encoders(image_fn: Callable[[np.ndarray], jax.Array],
                  text_fn: Callable[[np.ndarray], jax.Array], encoding: Encoding, *,
                  embed_dim: int, key: str, image_key: str = "",
                  batch_size: int = 256) -> Encoders:
  """Encoders from jitted image_fn(uint8 or float pixels [B,H,W,3]) and text_fn(ids int32
  [B, L]), each returning unit-norm embeddings [B, D].

  Texts are tokenized as `encoding` says, cut to the longest sequence of the batch (a
  `padded_length` bucket; exact, see `models.text.trim_padding`; not for towers that read the
  padding) and padded to `batch_size` rows so only a few shapes compile. `embed_images`
  resizes and crops as `encoding.preprocess` says, matching what image_fn normalises.
  """
  tokenizer = make_tokenizer(encoding.context_length, encoding.tokenizer_dir,
                             encoding.tokenizer_kwargs)
  pad_id = getattr(tokenizer, "pad_token_id", 0)

  def padded(fn, rows) -> np.ndarray:
    """fn over `rows` (an array, or a NaFlex dict of arrays) in batches of batch_size rows."""
    count = len(jax.tree.leaves(rows)[0])
    out = []
    for start in range(0, count, batch_size):
      chunk = jax.tree.map(lambda x: np.asarray(x[start:start + batch_size]), rows)
      n = len(jax.tree.leaves(chunk)[0])
      full = jax.tree.map(lambda x: np.concatenate(
          [x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)]), chunk)
      out.append(np.asarray(fn(full))[:n])
    return np.concatenate(out) if out else np.zeros((0, embed_dim), np.float32)

  def encode_texts(texts: Sequence[str]) -> np.ndarray:
    ids = tokenizer(list(texts))
    cut = (lambda rows: trim_padding(rows, pad_id=pad_id)) if encoding.trimmable else np.asarray
    chunks = [padded(text_fn, cut(ids[s:s + batch_size])) for s in range(0, len(ids), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, embed_dim), np.float32)

  return Encoders(lambda x: padded(image_fn, x), encode_texts,
                  encoding.image_size, embed_dim, key, image_key or key,
                  tuple(sorted(encoding.preprocess.items())))


@functools.lru_cache(maxsize=16)
def _jitted_towers(model) -> tuple[Callable, Callable]:
  """jit((params, pixels) -> unit image embeddings), jit((params, ids) -> unit text
  embeddings) of a CLIP model. The weights are arguments, not constants, so every set of
  weights of one architecture (base, adapted, blends, seeds) runs the same compiled programs."""
  pre = model.cfg.image_preprocess
  image = jax.jit(lambda p, x: l2_normalize(
      model.apply({"params": p}, pre.normalize_on_device(x), method=model.encode_image)))
  text = jax.jit(lambda p, ids: l2_normalize(
      model.apply({"params": p}, ids, method=model.encode_text)))
  return image, text


def clip_encoders(model, params: Any, batch_size: int = 256,
                  max_num_patches: int | None = None) -> Encoders:
  """Encoders of a clipjax CLIP model and its parameters; a NaFlex image tower sees
  `max_num_patches` patches per image (default: the architecture's)."""
  cfg = model.cfg
  arch = hashlib.sha256(repr(cfg).encode()).hexdigest()[:8]
  image, text = _jitted_towers(model)
  params = jax.device_put(params)  # once, not with every batch (numpy params would be copied)
  encoding, length = Encoding.of(cfg), ""
  if max_num_patches and cfg.vision.naflex:
    encoding = dataclasses.replace(encoding, preprocess=dict(encoding.preprocess,
                                                             max_num_patches=max_num_patches))
    length = f"-L{max_num_patches}"
  return make_encoders(
      functools.partial(image, params), functools.partial(text, params), encoding,
      embed_dim=cfg.embed_dim, key=f"clip-{arch}-{params_fingerprint(params)}{length}",
      image_key=f"visual-{arch}-{params_fingerprint(params['visual'])}{length}",
      batch_size=batch_size)


def embed_images(encoders: Encoders, source, *, batch_size: int = 64, num_workers: int = 2,
                 desc: str = "embedding images",
                 int_fields: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """Every image of a grain-compatible source, in source order, through worker processes.

  Returns `embeddings` [N_ok, D], `index` [N_ok] (source position of each row), `label`
  [N_ok] (-1 when absent), each of `int_fields` [N_ok] (the record's integer field, read in
  the same pass; `MISSING_FIELD` where absent) and `bad_records` [len(BAD_REASONS)]:
  unreadable images are skipped and counted, never silently dropped.
  """
  if len(source) == 0:
    raise ValueError(f"no images to embed in {source!r}")
  indexed = MapRecords(source, functools.partial(_with_position, int_fields=int_fields))
  prepare = PrepareExample(encoders.image_size, train=False, text_fields=(),
                           preprocess=dict(encoders.preprocess), int_fields=int_fields)
  ds = build_dataset(indexed, prepare, batch_size=batch_size, shuffle=False, num_epochs=1,
                     num_workers=num_workers, pad_remainder=True, process_index=0,
                     process_count=1)
  embeddings, index, labels = [], [], []
  fields = {name: [] for name in int_fields}
  bad = np.zeros(len(BAD_REASONS), np.int64)
  with tqdm(total=len(source), desc=desc, unit="img", leave=False) as bar:
    for batch in ds:
      mask = batch["mask"]
      bad += batch["bad_records"]
      if mask.any():
        embeddings.append(encoders.encode_images(jax.tree.map(lambda x: x[mask],
                                                              batch["image"])))
        index.append(batch["image_id"][mask])
        labels.append(batch["label"][mask])
        for name, values in fields.items():
          values.append(batch[name][mask])
      bar.update(int(mask.sum() + batch["bad_records"].sum()))
  if not embeddings:
    raise ValueError(f"none of the {len(source)} images of {source!r} could be read: "
                     f"{dict(zip(BAD_REASONS, bad.tolist()))}")
  return {"embeddings": np.concatenate(embeddings), "index": np.concatenate(index),
          "label": np.concatenate(labels), "bad_records": bad,
          **{name: np.concatenate(values) for name, values in fields.items()}}


def _with_position(record: dict, index: int, int_fields: tuple[str, ...] = ()) -> dict:
  # The pipeline returns image_id; evaluation needs the source position to align captions.
  return {"image": record["image"], "image_id": index, "label": record.get("label"),
          **{name: record.get(name) for name in int_fields}}
