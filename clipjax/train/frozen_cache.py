"""Embeddings of frozen towers, computed once and reused every step.

DRAFT, LiT and CLIP-3Modal never update the image tower, and without augmentation its output
for an image never changes; DRAFT's `one_qa` mode even shows every image three times per
epoch. CLIP-3Modal's caption tower is frozen too. With `data.cache_frozen=True` the loop embeds
each unique `image_id` of the training source once (through the evaluation's image pipeline),
and for CLIP-3Modal every record's caption, saves the tables in the work dir keyed by the
towers' weights and the data, and the workers then skip decoding images (and tokenising
captions). The image table is sharded across hosts and files and read by the data workers
(`image_embedding` rows by `image_id`, clipjax/data/embedding_table.py), so it scales with the
data set; the caption table is one host array (`caption_embedding` rows by `record_index`).
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from clipjax.data.embedding_table import (
  EmbeddingTable,
  StackedTables,
  finish_table,
  part_done,
  plan_parts,
  start_table,
  table_done,
  write_part,
)
from clipjax.data.records import BadRecord
from clipjax.data.views import Subset, first_record_per_image
from clipjax.evaluate.embed import clip_encoders, embed_images, params_fingerprint
from clipjax.files import write_atomically

PART_SIZE = 65536  # images per table part: 128 MB of float32 rows at embed_dim 512


class FrozenEmbeddings:
  """The cached tables of a run: `images`, read by the data workers (`CachedInputs` puts each
  record's `image_embedding` row in it), and `captions`, added to a host batch here. prefix
  "teacher_": a teacher's tables, whose rows come beside the inputs (`teacher_...`)."""

  def __init__(self, images: EmbeddingTable, captions: np.ndarray | None = None,
               prefix: str = ""):
    self.images, self.captions, self.prefix = images, captions, prefix

  def add_to(self, batch: dict) -> dict:
    if self.captions is not None:
      batch = dict(batch)
      batch[f"{self.prefix}caption_embedding"] = self.captions[batch.pop("record_index")]
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
                      *, num_workers: int = 2, batch_size: int = 64,
                      part_size: int = PART_SIZE, lengths: tuple[int, ...] = ()):
  """Embeds every unique image_id of `source` with the (frozen) image tower into a sharded
  table in `workdir/frozen_cache/` (clipjax/data/embedding_table.py), or opens the one a
  previous run finished. With several hosts (jax.distributed), host h embeds parts h, h + hosts,
  ... in parallel and all wait for the table before training; a partly built table (a run
  stopped while caching) continues with its missing parts.

  `lengths`: a NaFlex image tower's sequence lengths. An image's embedding depends on its
  length, so there is one table per length (the length in its key), read together: each
  record then carries [len(lengths), D] rows and its batch takes its length's row."""
  if lengths:
    return StackedTables([_image_table(model, clip_params, source, source_spec, workdir,
                                       num_workers, batch_size, part_size, n) for n in lengths])
  return _image_table(model, clip_params, source, source_spec, workdir, num_workers, batch_size,
                      part_size, None)


def _image_table(model, clip_params, source, source_spec, workdir, num_workers, batch_size,
                 part_size, max_num_patches) -> EmbeddingTable:
  options = model.cfg.transform_options()
  if max_num_patches:
    options["max_num_patches"] = max_num_patches
  key = _key(clip_params["visual"], dict(source_spec), model.cfg.vision.image_size, options)
  directory = workdir / "frozen_cache" / f"images-{key}"
  if not table_done(directory):
    first = first_record_per_image(source)
    ids = np.fromiter(first.keys(), np.int64, len(first))
    positions = np.fromiter(first.values(), np.int64, len(first))
    order = np.argsort(ids, kind="stable")
    ids, positions = ids[order], positions[order]
    parts = plan_parts(len(ids), part_size)
    host, hosts = jax.process_index(), jax.process_count()
    start_table(directory, model.cfg.embed_dim, len(parts), part_size)
    todo = [p for p in range(host, len(parts), hosts) if not part_done(directory, p)]
    encoders = clip_encoders(model, clip_params, batch_size, max_num_patches) if todo else None
    skipped = 0
    for n, p in enumerate(todo):
      lo, hi = parts[p]
      out = embed_images(encoders, Subset(source, positions[lo:hi]), batch_size=batch_size,
                         num_workers=num_workers,
                         desc=f"caching frozen image tower, part {n + 1}/{len(todo)}")
      write_part(directory, p, ids[lo:hi][out["index"]], out["embeddings"])
      skipped += int(out["bad_records"].sum())
    if skipped:
      logging.warning("frozen-tower cache: %d unreadable images; their records are skipped and "
                      "counted as corrupt_image", skipped)
    logging.info("frozen-tower cache: host %d embedded %d of %d parts (%d images)", host,
                 len(todo), len(parts), sum(parts[p][1] - parts[p][0] for p in todo))
    multihost_utils.sync_global_devices("frozen image cache: parts written")
    if host == 0:
      finish_table(directory)
    multihost_utils.sync_global_devices("frozen image cache: table finished")
  return EmbeddingTable(directory)
