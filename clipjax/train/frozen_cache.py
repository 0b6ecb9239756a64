"""Embeddings of a frozen image tower, computed once per image and reused every step.

DRAFT, LiT and CLIP-3Modal never update the image tower, and without augmentation its output
for an image never changes; DRAFT's `one_qa` mode even shows every image three times per
epoch. With `data.cache_frozen=True` the loop embeds each unique `image_id` of the training
source once (through the evaluation's image pipeline), saves the table in the work dir keyed
by the tower's weights and the data, and the workers then skip decoding images altogether:
batches carry `image_id`, the host looks up `image_embedding` rows.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from clipjax.data.records import BadRecord


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


class CachedImagesOnly:
  """The training source with images replaced by their cache key: records whose image could
  not be embedded become BadRecord("corrupt_image"), counted like any other bad record."""

  def __init__(self, source, cached_ids: np.ndarray):
    self.source, self.cached = source, {int(i) for i in cached_ids}

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    record = self.source[index]
    if isinstance(record, BadRecord):
      return record
    image_id = int(record.get("image_id", index))
    if image_id not in self.cached:
      return BadRecord("corrupt_image", f"image_id {image_id}: unreadable when caching")
    return dict({k: v for k, v in record.items() if k != "image"}, image_id=image_id)


def _key(visual_params: Any, source_spec: dict, image_size: int) -> str:
  from clipjax.evaluate.embed import params_fingerprint
  text = json.dumps({"visual": params_fingerprint(visual_params), "source": source_spec,
                     "image_size": image_size}, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_image_cache(model, clip_params: dict, source, source_spec: dict, workdir: epath.Path,
                      *, num_workers: int = 2, batch_size: int = 64) -> ImageEmbeddingCache:
  """Embeds every unique image_id of `source` with the (frozen) image tower, or loads the
  table a previous run saved in `workdir/frozen_cache/`."""
  from clipjax.evaluate.embed import clip_encoders, embed_images
  from clipjax.evaluate.tasks import Subset
  key = _key(clip_params["visual"], dict(source_spec), model.cfg.vision.image_size)
  path = workdir / "frozen_cache" / f"images-{key}.npz"
  if path.exists():
    with path.open("rb") as f:
      data = np.load(f)
      return ImageEmbeddingCache(data["ids"], data["embeddings"])
  first: dict[int, int] = {}
  for i in range(len(source)):
    record = source[i]
    if not isinstance(record, BadRecord):
      first.setdefault(int(record.get("image_id", i)), i)
  positions = np.asarray(list(first.values()), np.int64)
  out = embed_images(clip_encoders(model, clip_params, batch_size), Subset(source, positions),
                     batch_size=batch_size, num_workers=num_workers,
                     desc="caching frozen image tower")
  ids = np.asarray(list(first.keys()), np.int64)[out["index"]]
  skipped = int(out["bad_records"].sum())
  if skipped:
    logging.warning("frozen-tower cache: %d unreadable images; their records are skipped and "
                    "counted as corrupt_image", skipped)
  path.parent.mkdir(parents=True, exist_ok=True)
  import jax
  tmp = path.parent / f"{path.name}.tmp{jax.process_index()}"  # hosts may share the work dir
  with tmp.open("wb") as f:
    np.savez(f, ids=ids, embeddings=out["embeddings"].astype(np.float32))
  tmp.rename(path)  # never leave a half-written table under the final name
  return ImageEmbeddingCache(ids, out["embeddings"].astype(np.float32))
