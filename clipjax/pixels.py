"""Pixel normalisation, the one leaf both the models (a checkpoint's mean / std) and the input
pipeline (which ships uint8 pixels) import: OpenAI's mean and std, `normalize` on the host and
`normalize_on_device` inside a jitted step, bitwise equal."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(image, mean=OPENAI_MEAN, std=OPENAI_STD) -> np.ndarray:
  """RGB PIL image or uint8 [..., 3] -> float32, (x / 255 - mean) / std in float32 as
  torchvision."""
  x = np.asarray(image, np.uint8).astype(np.float32) / np.float32(255)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def normalize_on_device(x, mean=OPENAI_MEAN, std=OPENAI_STD):
  """`normalize` for uint8 batches inside a jitted function, bitwise equal to it: a lookup
  in the 256 x 3 table of normalised values (XLA would turn the divisions into reciprocal
  multiplications, 1 ulp off). Input pipelines ship uint8 pixels, a quarter of the bytes
  through worker IPC; float inputs are taken as already normalised and returned unchanged."""
  if x.dtype != jnp.uint8:
    return x
  table = jnp.asarray(normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1),
                                mean, std))  # [256, 3]
  return jnp.stack([table[:, c][x[..., c]] for c in range(3)], axis=-1)
