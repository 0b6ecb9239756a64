"""Image–text retrieval R@K and MRR (the LAION CLIP_benchmark protocol, methods.md §8), computed
block by block on a device mesh so a 100k x 500k gallery never materialises its score matrix.

Ranks instead of top-k: the rank of the first correct item is 1 + the number of *wrong* items
scoring strictly above the best correct one. Counting wrong items only makes the result exact
even when a positive's score is computed twice with different rounding; R@k is then
`rank <= k` (CLIP_benchmark's "at least one positive in the top k") and MRR is mean(1/rank).
Images are sharded over the devices; each block of texts is replicated, every device counts
against its own images and the per-text counts are summed with psum.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clipjax.evaluate.embed import unit_rows

_AXIS = "gallery"


def _check(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
           every_image_captioned: bool) -> None:
  if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
    raise ValueError(f"expected image_emb [N_images, D] and text_emb [N_texts, D], got "
                     f"{image_emb.shape} and {text_emb.shape}")
  if text_to_image.shape != (len(text_emb),):
    raise ValueError(f"text_to_image must have one image index per text ({len(text_emb)}), "
                     f"got shape {text_to_image.shape}")
  if len(text_emb) == 0 or len(image_emb) == 0:
    raise ValueError("retrieval needs at least one image and one caption")
  bad = (text_to_image < 0) | (text_to_image >= len(image_emb))
  if bad.any():
    raise ValueError(f"{int(bad.sum())} captions point to no image (text_to_image outside "
                     f"[0, {len(image_emb)}), e.g. caption {int(np.argmax(bad))})")
  uncovered = np.setdiff1d(np.arange(len(image_emb)), text_to_image)
  if every_image_captioned and len(uncovered):
    raise ValueError(f"{len(uncovered)} images have no caption (e.g. image {uncovered[0]}); "
                     f"image->text recall is undefined for them")


@functools.lru_cache(maxsize=8)
def _block_counter(mesh: Mesh):
  """jitted (images, best_positive, texts, text_to_image, positive, text_valid, image_counts)
  -> (text_counts [bt], image_counts [N]) for one block of texts."""
  hi = jax.lax.Precision.HIGHEST

  def count(images, best_pos, texts, t2i, pos, valid, image_counts):
    n_local = images.shape[0]
    gidx = jax.lax.axis_index(_AXIS) * n_local + jnp.arange(n_local)
    scores = jnp.dot(texts, images.T, precision=hi)                  # [bt, n_local]
    real_image = best_pos < jnp.inf  # padding images carry +inf
    wrong = (gidx[None, :] != t2i[:, None]) & valid[:, None] & real_image[None, :]
    text_counts = jnp.sum(wrong & (scores > pos[:, None]), axis=1, dtype=jnp.int32)
    image_counts = image_counts + jnp.sum(wrong & (scores > best_pos[None, :]), axis=0,
                                          dtype=jnp.int32)
    return jax.lax.psum(text_counts, _AXIS), image_counts

  sharded, rep = P(_AXIS), P()
  fn = jax.shard_map(count, mesh=mesh, in_specs=(sharded, sharded, rep, rep, rep, rep, sharded),
                     out_specs=(rep, sharded))
  return jax.jit(fn, donate_argnums=(6,))


def retrieval_ranks(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                    block_size: int = 4096, mesh: Mesh | None = None,
                    every_image_captioned: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Rank (1-based) of the first correct item for every text and for every image.

  Args:
    image_emb: [N_images, D]; text_emb: [N_texts, D] (L2-normalised here).
    text_to_image: int [N_texts], the image of each caption (several captions per image).
    block_size: texts per step; memory is block_size x N_images / devices scores per device.
    mesh: a 1-D mesh to shard the images over; all local devices by default.
    every_image_captioned: False allows gallery items no text points to (distractors, e.g.
      the hard negatives of text-text retrieval); such an item's rank is N_texts + 1.
  Returns:
    (text_ranks [N_texts] for text->image, image_ranks [N_images] for image->text), int64.
  """
  text_to_image = np.asarray(text_to_image, np.int64)
  image_emb, text_emb = unit_rows(image_emb), unit_rows(text_emb)
  _check(image_emb, text_emb, text_to_image, every_image_captioned)
  if mesh is None:
    mesh = Mesh(np.asarray(jax.local_devices()), (_AXIS,))
  n_dev, (n_img, dim) = mesh.devices.size, image_emb.shape
  # Score of each caption with its own image, and each image's best caption score.
  pos = np.einsum("td,td->t", text_emb, image_emb[text_to_image])
  best_pos = np.full(n_img, -np.inf, np.float32)
  np.maximum.at(best_pos, text_to_image, pos)
  pad = -n_img % n_dev  # padding images: zero vectors, excluded from every count
  images = np.concatenate([image_emb, np.zeros((pad, dim), np.float32)])
  best_pos = np.concatenate([best_pos, np.full(pad, np.inf, np.float32)])
  sharding = NamedSharding(mesh, P(_AXIS))
  images, best_pos = jax.device_put(images, sharding), jax.device_put(best_pos, sharding)
  image_counts = jax.device_put(np.zeros(n_img + pad, np.int32), sharding)
  counter = _block_counter(mesh)
  bt = min(block_size, len(text_emb))
  text_counts = []
  for start in range(0, len(text_emb), bt):
    stop = min(start + bt, len(text_emb))
    fill = bt - (stop - start)  # the last block is padded to keep one compiled shape

    def block(a, v, start=start, stop=stop, fill=fill):
      return np.concatenate([a[start:stop], np.full((fill, *a.shape[1:]), v, a.dtype)])

    counts, image_counts = counter(images, best_pos, block(text_emb, 0), block(text_to_image, -1),
                                   block(pos, np.inf), np.arange(bt) < stop - start, image_counts)
    text_counts.append(np.asarray(counts)[:stop - start])
  text_ranks = np.concatenate(text_counts).astype(np.int64) + 1
  image_ranks = np.asarray(image_counts)[:n_img].astype(np.int64) + 1
  return text_ranks, image_ranks


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10), block_size: int = 4096,
                      mesh: Mesh | None = None) -> dict[str, float]:
  """R@k and MRR in both directions, keys as in CLIP_benchmark.

  `image_retrieval_recall@k`: share of captions whose image is among the k best images
  (text->image); `text_retrieval_recall@k`: share of images with at least one of their captions
  among the k best captions (image->text); `image_retrieval_mrr`, `text_retrieval_mrr`.
  """
  text_ranks, image_ranks = retrieval_ranks(image_emb, text_emb, text_to_image, block_size, mesh)
  metrics = {f"image_retrieval_recall@{k}": float(np.mean(text_ranks <= k)) for k in ks}
  metrics["image_retrieval_mrr"] = float(np.mean(1.0 / text_ranks))
  metrics.update({f"text_retrieval_recall@{k}": float(np.mean(image_ranks <= k)) for k in ks})
  metrics["text_retrieval_mrr"] = float(np.mean(1.0 / image_ranks))
  return metrics
