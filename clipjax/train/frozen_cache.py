"""Embeddings of frozen towers, computed once and reused every step.

DRAFT, LiT and CLIP-3Modal never update the image tower, and without augmentation its output
for an image never changes; DRAFT's `one_qa` mode even shows every image three times per
epoch. CLIP-3Modal's caption tower is frozen too. With `data.cache_frozen=True` the loop embeds
each unique `image_id` of the training source once (through the evaluation's image pipeline),
and for CLIP-3Modal every record's caption, saves the tables in the work dir keyed by the
towers' weights and the data, and the workers then skip decoding images (and tokenising
captions): batches carry `image_id` / `record_index`, the host looks up `image_embedding` /
`caption_embedding` rows.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from clipjax.data.records import BadRecord
from clipjax.data.views import Subset, first_record_per_image
from clipjax.evaluate.embed import clip_encoders, embed_images, params_fingerprint
from clipjax.files import write_atomically


class ImageEmbeddingCache:
  """image_id -> unit embedding row. ids: int64 [M]; embeddings: float32 [M, D]."""

  def __init__(self, ids: np.ndarray, embeddings: np.ndarray):
    order = np.argsort(ids)
    self.ids, self.embeddings = ids[order], embeddings[order]

  def __contains__(self, image_id: int) -> bool:
    i = np.searchsorted(self.ids, image_id)
    return bool(i < len(self.ids) and self.ids[i] == image_id)

  def lookup(self, image_ids: np.ndarray) -> np.ndarray:
    """[B] ids -> [B, D] rows; every id must be cached (the source filter guarantees it)."""
    rows = np.searchsorted(self.ids, image_ids)
    rows = np.minimum(rows, len(self.ids) - 1)
    missing = self.ids[rows] != image_ids
    if missing.any():
      raise KeyError(f"image_ids {image_ids[missing][:5].tolist()} are not in the frozen-tower "
                     f"cache")
    return self.embeddings[rows]


class FrozenEmbeddings:
  """Adds the cached rows to a host batch (`image_embedding`, and `caption_embedding` when
  captions are cached)."""

  def __init__(self, images: ImageEmbeddingCache, captions: np.ndarray | None = None):
    self.images, self.captions = images, captions

  @property
  def ids(self) -> np.ndarray:
    return self.images.ids

  def add_to(self, batch: dict) -> dict:
    batch = dict(batch, image_embedding=self.images.lookup(batch["image_id"]))
    if self.captions is not None:
      batch["caption_embedding"] = self.captions[batch.pop("record_index")]
    return batch


def _key(params: Any, source_spec: dict, size: int, preprocess: dict | None = None) -> str:
  text = json.dumps({"params": params_fingerprint(params), "source": source_spec, "size": size,
                     "preprocess": preprocess}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load(path: epath.Path) -> dict[str, np.ndarray] | None:
  if not path.exists():
    return None
  with path.open("rb") as f:
    data = np.load(f)
    return {k: data[k] for k in data.files}


def _save(path: epath.Path, **arrays: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomically(path, buffer.getvalue())


def build_caption_cache(model, clip_params: dict, source, source_spec: dict,
                        workdir: epath.Path, *, batch_size: int = 256) -> np.ndarray:
  """[len(source), D] unit caption embeddings by source position (zeros for bad records and
  empty captions, which the pipeline skips), or the table a previous run saved."""
  text_params = {k: v for k, v in clip_params.items() if k != "visual"}
  key = _key(text_params, dict(source_spec), model.cfg.text.context_length)
  path = workdir / "frozen_cache" / f"captions-{key}.npz"
  cached = _load(path)
  if cached is not None:
    return cached["embeddings"]
  captions = [r.get("caption") or "" if not isinstance(r, BadRecord) else ""
              for r in (source[i] for i in range(len(source)))]
  keep = [i for i, c in enumerate(captions) if c.strip()]
  table = np.zeros((len(captions), model.cfg.embed_dim), np.float32)
  if keep:
    table[keep] = clip_encoders(model, clip_params, batch_size).encode_texts(
        [captions[i] for i in keep])
  _save(path, embeddings=table)
  return table


def build_image_cache(model, clip_params: dict, source, source_spec: dict, workdir: epath.Path,
                      *, num_workers: int = 2, batch_size: int = 64) -> ImageEmbeddingCache:
  """Embeds every unique image_id of `source` with the (frozen) image tower, or loads the
  table a previous run saved in `workdir/frozen_cache/`."""
  key = _key(clip_params["visual"], dict(source_spec), model.cfg.vision.image_size,
             model.cfg.image_preprocess.transform_kwargs())
  path = workdir / "frozen_cache" / f"images-{key}.npz"
  cached = _load(path)
  if cached is not None:
    return ImageEmbeddingCache(cached["ids"], cached["embeddings"])
  first = first_record_per_image(source)
  positions = np.asarray(list(first.values()), np.int64)
  out = embed_images(clip_encoders(model, clip_params, batch_size), Subset(source, positions),
                     batch_size=batch_size, num_workers=num_workers,
                     desc="caching frozen image tower")
  ids = np.asarray(list(first.keys()), np.int64)[out["index"]]
  skipped = int(out["bad_records"].sum())
  if skipped:
    logging.warning("frozen-tower cache: %d unreadable images; their records are skipped and "
                    "counted as corrupt_image", skipped)
  _save(path, ids=ids, embeddings=out["embeddings"].astype(np.float32))
  return ImageEmbeddingCache(ids, out["embeddings"].astype(np.float32))
