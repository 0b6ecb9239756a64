"""Preprocessing equals open_clip's transforms (torchvision) on the real COCO photos."""
import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from clipjax.data.transforms import (
  image_transform,
  normalize,
  random_resized_crop_params,
  to_pil,
)

TOL = 1e-5  # observed: exactly 0 (same PIL calls, same float32 arithmetic)


def _photos(coco_sample, n=None):
  paths = sorted((coco_sample / "images").glob("*.jpg"))[:n]
  return [Image.open(p) for p in paths]


def _ref_eval(size):
  return open_clip.image_transform(size, is_train=False)


@pytest.mark.parametrize("size", [224, 336])
def test_eval_transform_matches_openclip_on_coco(coco_sample, size):
  ours, ref = image_transform(size), _ref_eval(size)
  photos = _photos(coco_sample)
  assert len(photos) == 29
  for im in photos:
    x = ours(im)
    assert x.shape == (size, size, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref(im).numpy().transpose(1, 2, 0), rtol=0, atol=TOL)


@pytest.mark.parametrize("interpolation,resize_mode", [("bicubic", "squash"),
                                                       ("bilinear", "shortest")])
def test_checkpoint_preprocess_configs_match_openclip(coco_sample, interpolation, resize_mode):
  """The preprocessing a checkpoint names (open_clip's PreprocessCfg: mean/std 0.5, squash,
  bilinear), as `create_model_and_transforms` builds it."""
  pre = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation=interpolation,
             resize_mode=resize_mode)
  ours = image_transform(64, **pre)
  ref = open_clip.image_transform(64, is_train=False, **pre)
  for im in _photos(coco_sample, 8):
    np.testing.assert_allclose(ours(im), ref(im).numpy().transpose(1, 2, 0), rtol=0, atol=TOL)
  with pytest.raises(ValueError, match="resize_mode='longest'"):
    image_transform(64, resize_mode="longest")


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA"])
def test_other_modes_match_openclip(coco_sample, mode):
  """Grayscale, CMYK, alpha and palette images: resized in their own mode then converted,
  as open_clip does (palette images are resized with nearest neighbour by PIL)."""
  ours, ref = image_transform(224), _ref_eval(224)
  for im in _photos(coco_sample, 4):
    im = im.convert(mode)
    np.testing.assert_allclose(ours(im), ref(im).numpy().transpose(1, 2, 0), rtol=0, atol=TOL)


def test_sixteen_bit_images_keep_their_high_byte():
  """Documented deviation: 16-bit grayscale maps to 8-bit by v >> 8 (open_clip would clip)."""
  rng = np.random.default_rng(0)
  arr16 = rng.integers(0, 65536, size=(240, 300), dtype=np.uint16)
  im16 = Image.fromarray(arr16)  # mode I;16
  assert im16.mode.startswith("I")
  expected = image_transform(224)(Image.fromarray((arr16 >> 8).astype(np.uint8), "L"))
  np.testing.assert_array_equal(image_transform(224)(im16), expected)
  with pytest.raises(ValueError, match="mode 'F'"):
    to_pil(Image.fromarray(arr16.astype(np.float32)))
  with pytest.raises(ValueError, match="must be uint8"):
    to_pil(arr16)


def test_train_transform_equals_torchvision_for_the_drawn_crop(coco_sample):
  """The crop drawn from our Generator, applied by torchvision's resized_crop + open_clip's
  conversion and normalisation, gives our output."""
  train = image_transform(224, train=True)
  for k, im in enumerate(_photos(coco_sample, 6)):
    x = train(im, np.random.default_rng(k))
    top, left, h, w = random_resized_crop_params(*im.size, np.random.default_rng(k))
    ref = TF.resized_crop(im, top, left, h, w, [224, 224], TF.InterpolationMode.BICUBIC)
    ref = TF.normalize(TF.to_tensor(ref.convert("RGB")), open_clip.OPENAI_DATASET_MEAN,
                       open_clip.OPENAI_DATASET_STD)
    np.testing.assert_allclose(x, ref.numpy().transpose(1, 2, 0), rtol=0, atol=TOL)


def test_random_resized_crop_params_follow_scale_and_ratio():
  """Area fraction in [0.9, 1] (up to rounding) and the fallback for extreme aspect ratios,
  compared with torchvision's get_params statistics."""
  rng = np.random.default_rng(0)
  fracs = []
  for _ in range(500):
    top, left, h, w = random_resized_crop_params(640, 480, rng)
    assert 0 <= top <= 480 - h and 0 <= left <= 640 - w
    fracs.append(h * w / (640 * 480))
  torch.manual_seed(0)
  ref = [np.prod(torchvision_params(640, 480)[2:]) / (640 * 480) for _ in range(500)]
  assert min(fracs) > 0.89 and max(fracs) <= 1.0
  assert abs(np.mean(fracs) - np.mean(ref)) < 0.005
  # 10:1 panorama: no valid crop inside 3/4..4/3, torchvision's fallback is a centred 4:3 crop
  assert random_resized_crop_params(1000, 100, rng) == (0, 433, 100, 133)
  assert torchvision_params(1000, 100) == (0, 433, 100, 133)


def torchvision_params(width, height):
  import torchvision.transforms as T
  return tuple(T.RandomResizedCrop.get_params(Image.new("RGB", (width, height)), [0.9, 1.0],
                                              [3 / 4, 4 / 3]))


def test_normalize_matches_torchvision():
  im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8))
  ref = TF.normalize(TF.to_tensor(im), open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
  np.testing.assert_array_equal(normalize(im), ref.numpy().transpose(1, 2, 0))


def test_normalize_on_device_equals_host_normalize():
  """Batches travel as uint8 and are normalised inside jit: the same float32 arithmetic."""
  import jax

  from clipjax.pixels import normalize, normalize_on_device
  x = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
  on_device = np.asarray(jax.jit(normalize_on_device)(x))
  np.testing.assert_array_equal(on_device, normalize(x))  # bitwise
  floats = normalize(x)
  assert jax.jit(normalize_on_device)(floats).dtype == np.float32  # floats pass unchanged
