"""`model.dtype="auto"`: bfloat16 towers on TPUs and GPUs, float32 on CPUs; and, with the
accelerator policy forced on this CPU, the lowered train objective (forward and backward)
runs every transformer-block Dense in bfloat16 and every loss matmul in float32 at HIGHEST
precision. Parameters stay float32."""
import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clipjax
from clipjax.methods import get_method, method_config, run_options
from clipjax.models.layers import compute_dtype
from clipjax.parallel.mesh import make_mesh


@pytest.mark.parametrize("backend, want", [("tpu", jnp.bfloat16), ("gpu", jnp.bfloat16),
                                           ("cuda", jnp.bfloat16), ("cpu", jnp.float32)])
def test_auto_dtype_by_backend(backend, want):
  assert compute_dtype("auto", backend=backend) == want
  assert compute_dtype("float32", backend=backend) == jnp.float32
  assert compute_dtype("bfloat16", backend=backend) == jnp.bfloat16


def test_auto_is_float32_on_this_cpu_and_a_bad_name_is_an_error():
  assert compute_dtype("auto") == jnp.float32
  with pytest.raises(ValueError, match=r"model.dtype='bf16' is not one of \['auto', "
                                       r"'float32', 'bfloat16'\]"):
    compute_dtype("bf16")


_DOT = re.compile(r"stablehlo\.dot_general [^\n]*?precision = \[(\w+), \w+\][^\n]*?: "
                  r"\(tensor<[\dx]*x(\w+)>, tensor<[\dx]*x(\w+)>\)[^\n]*loc\((#loc\d+)\)")
_LOC = re.compile(r"^(#loc\d+) = loc\((.*)\)$", re.M)


def _dots(text: str) -> list[tuple[str, str, str, str]]:
  """(op name, lhs dtype, rhs dtype, precision) of every dot_general in lowered StableHLO
  with debug info; the name is the jax name stack (`jvp(CLIP.encode_image)/visual/...`)."""
  locs = dict(_LOC.findall(text))

  def name(ref: str, depth: int = 0) -> str:
    body = locs.get(ref, "")
    quoted = re.match(r'"([^"]*)"', body)
    if quoted:
      return quoted.group(1)
    refs = re.findall(r"#loc\d+", body)
    return name(refs[0], depth + 1) if refs and depth < 8 else body

  return [(name(loc), lhs, rhs, prec) for prec, lhs, rhs, loc in _DOT.findall(text)]


@pytest.mark.parametrize("method", ["clip", "draft"])
def test_accelerator_policy_in_the_lowered_train_objective(method):
  dtype = compute_dtype("auto", backend="tpu")
  model, clip = clipjax.create_model("ViT-T-16-test", dtype=dtype)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(clip))  # params stay float32
  objective = get_method(method).objective(model, make_mesh(), run_options(method_config(method)))
  batch = {"image": np.zeros((8, 32, 32, 3), np.uint8), "caption": np.ones((8, 16), np.int32),
           "dialogue": np.ones((8, 16), np.int32), "image_id": np.arange(8)}
  grad = jax.value_and_grad(lambda p, b, k: objective.loss_fn(p, b, k)[0])
  text = jax.jit(grad).lower({"clip": clip}, batch, jax.random.key(0)).as_text(debug_info=True)
  dots = _dots(text)
  assert len(dots) == text.count("stablehlo.dot_general"), "a dot_general was not parsed"
  kinds = collections.Counter()
  for name, lhs, rhs, precision in dots:
    if re.search(r"resblocks_\d+/(attn/(in|out)_proj|mlp/c_(fc|proj))/", name):
      assert (lhs, rhs) == ("bf16", "bf16"), name  # block Dense, forward and backward
      kinds["block"] += 1
    elif "CLIP." not in name:  # outside the towers: the loss
      assert (lhs, rhs, precision) == ("f32", "f32", "HIGHEST"), name
      kinds["loss"] += 1
  # 2 towers x 2 blocks x 4 Dense, each once forward and twice backward (except the first
  # layer's input gradient, which nothing needs): at least 3 x 16 - 4
  assert kinds["block"] >= 44 and kinds["loss"] >= 2, kinds
