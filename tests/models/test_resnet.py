"""ModifiedResNet specifics (parity with open_clip is in test_openclip_parity.py, strict
open_clip loading of the export in tests/convert/test_convert.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.convert.hf import export_hf
from clipjax.convert.io import CheckpointError
from clipjax.models import CLIP, create_model, get_model_config


@pytest.fixture(scope="module")
def tiny_resnet():
  return create_model("RN-T-test")


def test_batchnorm_statistics_get_no_gradient(tiny_resnet):
  model, params = tiny_resnet
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, images,
                                                 method=model.encode_image) ** 2))(params)
  flat = {"/".join(k.key for k in path): g
          for path, g in jax.tree_util.tree_leaves_with_path(grads["visual"])}
  stats = [k for k in flat if k.endswith(("running_mean", "running_var"))]
  assert len(stats) == 2 * (3 + 4 * 3 + 4 * 1)  # stem, three BNs per block, four downsamples
  assert all(not np.any(flat[k]) for k in stats)
  # (the branch convs get none yet: open_clip zero-initialises each block's last BN scale)
  assert np.any(flat["layer4_0/bn3/weight"]) and np.any(flat["layer4_0/downsample_0/kernel"])
  assert np.any(flat["attnpool/q_proj/kernel"])


def test_bfloat16_compute_stays_close(tiny_resnet):
  model, params = tiny_resnet
  bf16 = CLIP(get_model_config("RN-T-test"), dtype=jnp.bfloat16)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)), jnp.float32)
  full = model.apply({"params": params}, images, method=model.encode_image)
  half = bf16.apply({"params": params}, images, method=bf16.encode_image)
  assert half.dtype == jnp.float32
  cos = jnp.sum(full * half, -1) / jnp.linalg.norm(full, axis=-1) / jnp.linalg.norm(half, axis=-1)
  assert float(cos.min()) > 0.99  # bfloat16 keeps ~3 significant digits


def test_hf_export_of_a_resnet_is_a_clear_error(tiny_resnet, tmp_path):
  _, params = tiny_resnet
  with pytest.raises(CheckpointError, match="no ResNet image tower.*export_openclip"):
    export_hf(params, "RN-T-test", tmp_path)
