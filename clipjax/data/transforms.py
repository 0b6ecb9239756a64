"""Image preprocessing identical to open_clip's, without torch.

Eval (`image_transform(..., train=False)`): bicubic resize of the shorter side to the model's
size (torchvision's rule: long side `int(size * long / short)`), centre crop (offsets rounded
as torchvision), convert to RGB, scale to [0, 1], normalise with OpenAI's mean/std. The same
PIL calls in the same order as open_clip, so palette, CMYK, alpha and grayscale images give
open_clip's pixels exactly.

Train: `RandomResizedCrop(size, scale=(0.9, 1.0), ratio=(3/4, 4/3))` with bicubic resize, as
open_clip's default `AugmentationCfg`; the crop is drawn with torchvision's algorithm from an
explicit `numpy.random.Generator`.

16-bit images (PIL modes `I;16*`, `I`): open_clip's `convert('RGB')` clips them to 255 (a
white picture). Here they are first mapped to 8-bit grayscale by keeping the high byte
(`v >> 8`, values clipped to [0, 65535]), a documented deviation. Floating-point (`F`) images
are rejected. Output: float32 [H, W, 3] (HWC).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image

from clipjax.pixels import OPENAI_MEAN, OPENAI_STD, normalize

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_pil(image) -> Image.Image:
  """Accepts a PIL image or a uint8 array [H, W] / [H, W, 3|4]; maps 16-bit to 8-bit."""
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise ValueError(f"image arrays must be uint8, got {image.dtype} (scale to 0..255 first)")
    image = Image.fromarray(image)
  if not isinstance(image, Image.Image):
    raise TypeError(f"expected a PIL image or uint8 array, got {type(image).__name__}")
  if image.mode in _SIXTEEN_BIT:
    high = np.clip(np.asarray(image, np.int64), 0, 65535) >> 8
    image = Image.fromarray(high.astype(np.uint8), "L")
  elif image.mode == "F":
    raise ValueError("floating-point (mode 'F') images are not supported; convert to 8-bit")
  return image


_INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def resize_shorter_side(image: Image.Image, size: int, resample=Image.BICUBIC) -> Image.Image:
  w, h = image.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  if (new_w, new_h) == (w, h):
    return image
  return image.resize((new_w, new_h), resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
  w, h = image.size
  if w < size or h < size:  # cannot happen after resize_shorter_side; guard for direct use
    raise ValueError(f"image {w}x{h} is smaller than the crop {size}x{size}")
  top = int(round((h - size) / 2.0))
  left = int(round((w - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def random_resized_crop_params(width: int, height: int, rng: np.random.Generator,
                               scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: returns (top, left, height, width)."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def image_transform(image_size: int, train: bool = False,
                    mean=OPENAI_MEAN, std=OPENAI_STD, scale=(0.9, 1.0),
                    ratio=(3 / 4, 4 / 3), uint8: bool = False, interpolation: str = "bicubic",
                    resize_mode: str = "shortest") -> Callable[..., np.ndarray]:
  """open_clip's preprocessing as a function of a PIL image (and, for train, a Generator).

  `interpolation` (bicubic | bilinear) and `resize_mode` (shortest: resize the shorter side and
  centre-crop; squash: resize to the square, ignoring the aspect ratio) follow open_clip's
  `PreprocessCfg` of the checkpoint.

  Returns `f(image) -> float32 [S, S, 3]` (eval) or `f(image, rng) -> float32 [S, S, 3]`;
  with `uint8=True` the resized, cropped RGB pixels before normalisation (uint8 [S, S, 3]),
  to be normalised later with `normalize` / `normalize_on_device`.
  """
  finish = (lambda im: np.asarray(im, np.uint8)) if uint8 else (
      lambda im: normalize(im, mean, std))
  if interpolation not in _INTERPOLATION or resize_mode not in ("shortest", "squash"):
    raise ValueError(f"unsupported preprocessing interpolation={interpolation!r} resize_mode="
                     f"{resize_mode!r}; clipjax has bicubic/bilinear and shortest/squash")
  resample = _INTERPOLATION[interpolation]
  size = int(image_size)

  def eval_transform(image) -> np.ndarray:
    if resize_mode == "squash":
      image = to_pil(image)
      image = image if image.size == (size, size) else image.resize((size, size), resample)
    else:
      image = center_crop(resize_shorter_side(to_pil(image), size, resample), size)
    return finish(image.convert("RGB"))

  def train_transform(image, rng: np.random.Generator) -> np.ndarray:
    image = to_pil(image)
    top, left, h, w = random_resized_crop_params(*image.size, rng, scale, ratio)
    image = image.crop((left, top, left + w, top + h)).resize((size, size), resample)
    return finish(image.convert("RGB"))

  return train_transform if train else eval_transform
