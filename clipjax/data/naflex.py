"""NaFlex preprocessing (SigLIP 2): each image at its own aspect ratio, as a padded patch sequence.

An image is resized, keeping its aspect ratio, to the largest size whose sides are multiples of
the patch size and whose patch count fits `max_num_patches`; cut into patches in row-major grid
order, each flattened (row, column, channel); and padded with zero patches to `max_num_patches`.
The example holds transformers' names (`Siglip2ImageProcessor`):

- `pixel_values` [max_num_patches, P·P·3] (float32 normalised, or uint8 with `uint8=True`, to be
  normalised on device by `clipjax.pixels.normalize_on_device`);
- `pixel_attention_mask` int32 [max_num_patches]: 1 for the image's patches, 0 for padding;
- `spatial_shapes` int32 [2]: the patch grid (rows, columns).

The size rule is transformers' (a bisection on the scale, `size_for_max_patches`), so the
grids and masks equal theirs for every image size; pixels equal theirs up to the resize kernel
(here PIL's, with its antialiasing when shrinking). Training uses the same resize (no random
crop: a crop would change the aspect ratio NaFlex preserves).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from clipjax.data.transforms import _INTERPOLATION, image_transform, to_pil
from clipjax.pixels import normalize

NaFlexExample = dict[str, np.ndarray]


def size_for_max_patches(height: int, width: int, patch: int, max_patches: int,
                         eps: float = 1e-5) -> tuple[int, int]:
  """(height, width) after the aspect-preserving resize: sides rounded up to multiples of
  `patch` (at least one patch), the scale the largest a bisection over [eps/10, 100] finds with
  (rows · columns) ≤ `max_patches`."""
  def side(scale: float, size: int) -> int:
    return max(patch, math.ceil(size * scale / patch) * patch)

  low, high = eps / 10, 100.0
  while high - low >= eps:
    mid = (low + high) / 2
    if (side(mid, height) // patch) * (side(mid, width) // patch) <= max_patches:
      low = mid
    else:
      high = mid
  return side(low, height), side(low, width)


def patchify(pixels: np.ndarray, patch: int) -> np.ndarray:
  """[H, W, C] (H, W multiples of `patch`) -> [H/P · W/P, P·P·C], row-major over the grid."""
  h, w, c = pixels.shape
  grid = pixels.reshape(h // patch, patch, w // patch, patch, c).transpose(0, 2, 1, 3, 4)
  return grid.reshape(-1, patch * patch * c)


def naflex_example(image, patch: int, max_num_patches: int, mean, std,
                   interpolation: str = "bilinear", uint8: bool = False) -> NaFlexExample:
  """One image (PIL or uint8 array) -> the example dict described in the module docstring."""
  image = to_pil(image).convert("RGB")
  width, height = image.size
  h, w = size_for_max_patches(height, width, patch, max_num_patches)
  if (w, h) != image.size:
    image = image.resize((w, h), _INTERPOLATION[interpolation])
  pixels = np.asarray(image, np.uint8) if uint8 else normalize(image, mean, std)
  patches = patchify(pixels, patch)
  count = patches.shape[0]
  padded = np.zeros((max_num_patches, patches.shape[1]), patches.dtype)
  padded[:count] = patches
  return {"pixel_values": padded,
          "pixel_attention_mask": (np.arange(max_num_patches) < count).astype(np.int32),
          "spatial_shapes": np.array([h // patch, w // patch], np.int32)}


def naflex_transform(patch_size: int, max_num_patches: int, mean, std,
                     interpolation: str = "bilinear", uint8: bool = False,
                     train: bool = False) -> Callable[..., NaFlexExample]:
  """`f(image) -> example` (eval) or `f(image, rng) -> example` (train: the same resize, the
  generator unused), as `image_transform`'s two forms."""
  if interpolation not in _INTERPOLATION:
    raise ValueError(f"NaFlex interpolation={interpolation!r}: clipjax has "
                     f"{sorted(_INTERPOLATION)}")
  if max_num_patches < 1:
    raise ValueError(f"max_num_patches must be a positive number of patches, got "
                     f"{max_num_patches}")

  def eval_transform(image) -> NaFlexExample:
    return naflex_example(image, patch_size, max_num_patches, mean, std, interpolation, uint8)

  def train_transform(image, rng: np.random.Generator) -> NaFlexExample:
    del rng  # no random crop: see the module docstring
    return eval_transform(image)

  return train_transform if train else eval_transform


def stack_examples(examples: list[NaFlexExample]) -> dict[str, np.ndarray]:
  """Examples of one sequence length -> the batch dict ([N, L, P·P·3], [N, L], [N, 2])."""
  lengths = {e["pixel_attention_mask"].shape[0] for e in examples}
  if len(lengths) != 1:
    raise ValueError(f"a NaFlex batch has one sequence length; got {sorted(lengths)}")
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def make_image_transform(image_size: int, *, train: bool = False, uint8: bool = False,
                         max_num_patches: int | None = None, patch_size: int | None = None,
                         resize_mode: str = "shortest", **preprocess) -> Callable:
  """The image transform a model's options describe (`CLIPConfig.transform_options`): the
  NaFlex example at `max_num_patches` for `resize_mode="naflex"`, else open_clip's
  fixed-size `image_transform`."""
  if resize_mode != "naflex":
    return image_transform(image_size, train=train, uint8=uint8, resize_mode=resize_mode,
                           **preprocess)
  if not patch_size or not max_num_patches:
    raise ValueError("a NaFlex transform needs patch_size and max_num_patches")
  return naflex_transform(patch_size, max_num_patches, preprocess["mean"], preprocess["std"],
                          preprocess.get("interpolation", "bilinear"), uint8=uint8, train=train)
