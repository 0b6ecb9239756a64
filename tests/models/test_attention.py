"""The attention kernel (`model.attention`): which implementation of
jax.nn.dot_product_attention each backend, dtype and shape gets, the
setting reaching every attention call, and cuDNN against XLA on a GPU (skipped without one)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clipjax
from clipjax.models import CLIP, get_model_config
from clipjax.models.layers import attention_kernel


@pytest.mark.parametrize("attention, dtype, head_dim, bias, backend, want", [
    ("auto", jnp.bfloat16, 64, False, "gpu", "cudnn"),
    ("auto", jnp.float16, 128, False, "cuda", "cudnn"),
    ("auto", jnp.float32, 64, False, "gpu", "xla"),     # cuDNN flash attention is half precision
    ("auto", jnp.bfloat16, 72, False, "gpu", "cudnn"),  # any multiple of 8
    ("auto", jnp.bfloat16, 256, False, "gpu", "xla"),   # head dim above 128
    ("auto", jnp.bfloat16, 60, False, "gpu", "xla"),    # not a multiple of 8
    ("auto", jnp.bfloat16, 64, True, "gpu", "xla"),     # an additive bias
    ("auto", jnp.bfloat16, 64, False, "tpu", "xla"),
    ("auto", jnp.bfloat16, 64, False, "cpu", "xla"),
    ("xla", jnp.bfloat16, 64, False, "gpu", "xla"),
    ("cudnn", jnp.float32, 64, False, "gpu", "cudnn"),  # as asked (jax raises if unsupported)
])
def test_kernel_selection(attention, dtype, head_dim, bias, backend, want):
  assert attention_kernel(attention, dtype, head_dim, has_bias=bias, backend=backend) == want


def test_unknown_kernel_is_an_error():
  with pytest.raises(ValueError, match=r"model.attention='flash' is not one of \['auto', "
                                       r"'xla', 'cudnn'\]"):
    attention_kernel("flash", jnp.float32, 64)


@pytest.mark.parametrize("arch", ["ViT-T-16-test", "ViT-T-16-SigLIP2-test", "RN-T-test"])
def test_the_setting_reaches_every_attention_of_both_towers(arch):
  """CLIP(attention="cudnn") asks jax for cuDNN in the image and the text tower (traced only:
  on this CPU jax refuses it, which shows the call got the setting); "xla" traces. The XLA
  outputs themselves are the ones the open_clip parity tests check ("auto" is XLA here)."""
  cfg = get_model_config(arch)
  size, length = cfg.vision.image_size, cfg.text.context_length
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.bfloat16)
  ids = jax.ShapeDtypeStruct((2, length), jnp.int32)
  params = jax.eval_shape(CLIP(cfg).init, jax.random.key(0), images, ids)
  for method, x in (("encode_image", images), ("encode_text", ids)):
    for attention in ("xla", "cudnn"):
      model = CLIP(cfg, dtype=jnp.bfloat16, attention=attention)
      run = functools.partial(model.apply, method=getattr(model, method))
      if attention == "xla":
        jax.eval_shape(run, params, x)
      else:
        with pytest.raises(RuntimeError, match="cuDNN"):
          jax.eval_shape(run, params, x)


@pytest.mark.skipif(jax.default_backend() not in ("gpu", "cuda"),
                    reason="cuDNN flash attention needs a GPU; none on this machine")
def test_cudnn_matches_xla_on_a_gpu():
  """bfloat16 ViT-B-16 towers: cuDNN within bfloat16 rounding of XLA (relative 2e-2)."""
  outs = {}
  for attention in ("cudnn", "xla"):
    model, params = clipjax.create_model("ViT-B-16", dtype=jnp.bfloat16, attention=attention)
    images = jax.random.normal(jax.random.key(0), (4, 224, 224, 3))
    ids = jax.random.randint(jax.random.key(1), (4, 77), 1, 49000)
    outs[attention] = [np.asarray(x, np.float32) for x in
                       jax.jit(model.apply)({"params": params}, images, ids)[:2]]
  for a, b in zip(outs["cudnn"], outs["xla"]):
    assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
