"""Transformer building blocks with OpenCLIP's parameter names and numerics.

Parameters are float32; `dtype` is the compute dtype (bfloat16 on TPU). LayerNorm always runs
in float32 (open_clip's `LayerNormFp32` behaviour under mixed precision) with eps 1e-5 and the
two-pass variance torch uses. Blocks are pre-LN: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# `model.dtype`: the towers' compute dtype by name; "auto" picks by backend (`compute_dtype`).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ACCELERATORS = ("tpu", "gpu", "cuda", "rocm")


def compute_dtype(setting: str, backend: str | None = None) -> Dtype:
  """The towers' compute dtype for `model.dtype`: "auto" is bfloat16 on TPUs and GPUs and
  float32 on CPUs (where bfloat16 matmuls are emulated, slower and less exact). Parameters,
  optimizer state, LayerNorms, the final projections and every loss stay float32 whatever
  this says."""
  if setting == "auto":
    return jnp.bfloat16 if (backend or jax.default_backend()) in ACCELERATORS else jnp.float32
  if setting not in COMPUTE_DTYPES:
    raise ValueError(f"model.dtype={setting!r} is not one of {['auto', *COMPUTE_DTYPES]}")
  return COMPUTE_DTYPES[setting]


# `model.attention`: the kernel of jax.nn.dot_product_attention.
ATTENTION_KERNELS = ("auto", "xla", "cudnn")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def attention_kernel(attention: str, dtype: Dtype, head_dim: int, *, has_bias: bool = False,
                     backend: str | None = None) -> str:
  """The `implementation` for `jax.nn.dot_product_attention`: "xla" or "cudnn" as asked, or
  for "auto" cuDNN flash attention on a GPU for the shapes it takes (bfloat16 / float16, head
  dim a multiple of 8 up to 128, no additive bias), XLA everywhere else (CPU, TPU, float32)."""
  if attention not in ATTENTION_KERNELS:
    raise ValueError(f"model.attention={attention!r} is not one of {list(ATTENTION_KERNELS)}")
  if attention != "auto":
    return attention
  backend = backend or jax.default_backend()
  cudnn = (backend in ("gpu", "cuda") and jnp.dtype(dtype) in _CUDNN_DTYPES
           and head_dim % 8 == 0 and head_dim <= 128 and not has_bias)
  return "cudnn" if cudnn else "xla"


def key_padding_bias(mask: jax.Array, dtype: Dtype) -> jax.Array:
  """[N, L] mask (1 = a token, 0 = padding) -> [N, 1, 1, L] additive attention bias: 0 for
  tokens, float32's lowest for padding keys (HF's extended attention mask)."""
  return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(dtype)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, attention: str = "auto",
                          **kwargs) -> jax.Array:
  """`jax.nn.dot_product_attention` ([N, L, H, Dh] q/k/v) with the kernel `attention` picks for
  the compute dtype and head dim (see `attention_kernel`)."""
  kernel = attention_kernel(attention, q.dtype, q.shape[-1],
                            has_bias=kwargs.get("bias") is not None)
  return jax.nn.dot_product_attention(q, k, v, implementation=kernel, **kwargs)


# `model.remat`: True (= "nothing_saveable") or one of jax's checkpoint policies by name: what
# each block keeps from its forward pass for the backward (the rest is recomputed).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_policy(remat: bool | str) -> Callable | None:
  """None for no rematerialisation, else the `jax.checkpoint` policy `remat` names."""
  if remat is False or remat in (None, "", "none", "False"):
    return None
  name = "nothing_saveable" if remat is True or remat == "True" else remat
  if name not in REMAT_POLICIES:
    raise ValueError(f"model.remat={remat!r} is not one of {[False, True, *REMAT_POLICIES]}")
  return getattr(jax.checkpoint_policies, name)


def _scan_step(block: type[nn.Module]) -> type[nn.Module]:
  """`block` as an nn.scan body: (carry, *broadcast) -> (first output, None)."""
  class Step(block):
    def __call__(self, carry, *broadcast):
      out = super().__call__(carry, *broadcast)
      return (out[0] if isinstance(out, tuple) else out), None
  Step.__name__ = block.__name__
  return Step


def layer_stack(block: type[nn.Module], args: tuple, count: int, name: str, *,
                remat: bool | str = False, scan: bool = False,
                start: int = 0) -> Callable[..., jax.Array]:
  """`count` identical blocks `block(*args)` applied in turn: run(x, *broadcast) -> x (a block
  returning a tuple passes on its first element; `broadcast` goes to every block unchanged).

  Unrolled, the blocks are submodules `{name}_{start}` ... `{name}_{start + count - 1}` (open_clip's
  numbering). With `scan`, one `nn.scan` submodule `{name}` holds every block's parameters
  stacked on a leading [count] axis (`models.stacking` converts between the two layouts), and
  XLA compiles the block once instead of `count` times. Call from a compact method.
  """
  policy = remat_policy(remat)
  if scan and count > 0:
    step = _scan_step(block)
    if policy is not None:
      step = nn.remat(step, policy=policy, prevent_cse=False)  # a scan body needs no CSE guard
    stacked = nn.scan(step, variable_axes={"params": 0, "lora": 0},  # lora: models/lora.py
                      split_rngs={"params": True, "lora_dropout": True},
                      in_axes=nn.broadcast, length=count)(*args, name=name)
    return lambda x, *broadcast: stacked(x, *broadcast)[0]
  cls = block if policy is None else nn.remat(block, policy=policy)
  blocks = [cls(*args, name=f"{name}_{i}") for i in range(start, start + count)]

  def run(x, *broadcast):
    for b in blocks:
      out = b(x, *broadcast)
      x = out[0] if isinstance(out, tuple) else out
    return x
  return run


def check_images(images: jax.Array, size: int, tower: str) -> None:
  """Raises a ValueError naming the expected [N, size, size, 3] (NHWC) shape."""
  if not hasattr(images, "ndim"):
    raise ValueError(f"{tower} takes an image array [N, {size}, {size}, 3] (NHWC), got "
                     f"{type(images).__name__} (NaFlex batches are for NaFlex towers)")
  if images.ndim != 4 or images.shape[1:] != (size, size, 3):
    raise ValueError(f"{tower} expects images of shape [N, {size}, {size}, 3] (NHWC), "
                     f"got {images.shape}")


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's activation, `x * sigmoid(1.702 x)` (the `-quickgelu` models)."""
  return x * jax.nn.sigmoid(1.702 * x)


def exact_gelu(x: jax.Array) -> jax.Array:
  """torch.nn.GELU() default: the erf form, not the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


def tanh_gelu(x: jax.Array) -> jax.Array:
  """torch.nn.GELU(approximate='tanh') (timm's 'gelu_tanh'; SigLIP 2 text towers)."""
  return jax.nn.gelu(x, approximate=True)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis in float32; params `scale`/`bias` (torch `weight`/`bias`)."""
  dtype: Dtype = jnp.float32
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (dim,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (dim,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    return (centred * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(self.dtype)


class MultiheadAttention(nn.Module):
  """torch.nn.MultiheadAttention layout: one fused `in_proj` (q, k, v) and `out_proj`.

  Attributes:
    heads: number of heads; head_dim = width // heads, logits scaled by head_dim^-1/2.
    causal: mask future positions (text tower).
  """
  heads: int
  causal: bool = False
  dtype: Dtype = jnp.float32
  init_std: tuple[float, float] | None = None  # (in_proj, out_proj) normal stds; None: default
  attention: str = "auto"  # the kernel (ATTENTION_KERNELS)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [N, L, W] -> [N, L, W]."""
    n, length, width = x.shape
    head_dim = width // self.heads
    in_init, out_init = ((nn.initializers.normal(s) for s in self.init_std) if self.init_std
                         else (nn.initializers.lecun_normal(),) * 2)
    qkv = nn.Dense(3 * width, dtype=self.dtype, kernel_init=in_init, name="in_proj")(x)
    q, k, v = jnp.split(qkv.reshape(n, length, 3, self.heads, head_dim), 3, axis=2)
    out = dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], self.attention,
                                is_causal=self.causal)
    out = out.reshape(n, length, width)
    return nn.Dense(width, dtype=self.dtype, kernel_init=out_init, name="out_proj")(out)


class MLP(nn.Module):
  """`c_fc` -> activation -> `c_proj`, as open_clip's block MLP."""
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  dtype: Dtype = jnp.float32
  init_std: tuple[float, float] | None = None  # (c_fc, c_proj)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fc_init, proj_init = ((nn.initializers.normal(s) for s in self.init_std) if self.init_std
                          else (nn.initializers.lecun_normal(),) * 2)
    h = nn.Dense(self.mlp_width, dtype=self.dtype, kernel_init=fc_init, name="c_fc")(x)
    h = self.act(h)
    return nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=proj_init, name="c_proj")(h)


class LayerScale(nn.Module):
  """open_clip's LayerScale (CaiT): x · gamma, one learned [W] factor initialised to
  `init_value` (e.g. 1e-4, so each residual branch starts near zero)."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],),
                       jnp.float32)
    return x * gamma.astype(x.dtype)


class ResidualAttentionBlock(nn.Module):
  heads: int
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  causal: bool = False
  dtype: Dtype = jnp.float32
  init_stds: tuple[float, float, float, float] | None = None  # attn, proj, fc, proj
  ln_eps: float = 1e-5
  attention: str = "auto"
  ls_init_value: float | None = None  # layer scale `ls_1` / `ls_2` on both branches; None: none

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = self.init_stds
    scale = ((lambda y, name: LayerScale(self.ls_init_value, name=name)(y))
             if self.ls_init_value is not None else (lambda y, name: y))
    h = MultiheadAttention(self.heads, self.causal, self.dtype, (s[0], s[1]) if s else None,
                           self.attention, name="attn")(
                               LayerNorm(self.dtype, self.ln_eps, name="ln_1")(x))
    x = x + scale(h, "ls_1")
    h = MLP(self.mlp_width, self.act, self.dtype, (s[2], s[3]) if s else None, name="mlp")(
        LayerNorm(self.dtype, self.ln_eps, name="ln_2")(x))
    return x + scale(h, "ls_2")


class Transformer(nn.Module):
  """A stack of `resblocks_{i}` (or, scanned, one `resblocks` with a leading layer axis),
  optionally rematerialised block by block (`layer_stack`)."""
  layers: int
  heads: int
  mlp_width: int
  act: Callable[[jax.Array], jax.Array]
  causal: bool = False
  dtype: Dtype = jnp.float32
  remat: bool | str = False  # False, True or a policy name (REMAT_POLICIES)
  openclip_init: bool = False  # open_clip's text-tower normal init (vision uses torch defaults)
  ln_eps: float = 1e-5
  attention: str = "auto"
  scan: bool = False
  ls_init_value: float | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    stds = None
    if self.openclip_init:
      proj_std = width ** -0.5 * (2 * self.layers) ** -0.5
      stds = (width ** -0.5, proj_std, (2 * width) ** -0.5, proj_std)
    blocks = layer_stack(ResidualAttentionBlock, (self.heads, self.mlp_width, self.act,
                                                  self.causal, self.dtype, stds, self.ln_eps,
                                                  self.attention, self.ls_init_value),
                         self.layers, "resblocks", remat=self.remat, scan=self.scan)
    return blocks(x)


def kept_patches(n: int, patches: int, rate: float, key: jax.Array) -> jax.Array:
  """[N, K] indices of the patches open_clip's PatchDropout (FLIP) keeps per image: K =
  max(1, int(patches · (1 − rate))) chosen uniformly, as the top K of i.i.d. normal scores
  (how open_clip draws them)."""
  keep = max(1, int(patches * (1 - rate)))
  return jax.lax.top_k(jax.random.normal(key, (n, patches)), keep)[1]


def drop_patches(x: jax.Array, rate: float, key: jax.Array, prefix: int) -> jax.Array:
  """[N, prefix + T, W] tokens -> [N, prefix + K, W]: the `prefix` (class) tokens and the
  patches `kept_patches` chooses."""
  chosen = kept_patches(x.shape[0], x.shape[1] - prefix, rate, key) + prefix
  patches = jnp.take_along_axis(x, chosen[..., None], axis=1)
  return jnp.concatenate([x[:, :prefix], patches], axis=1)
