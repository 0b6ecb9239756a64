"""OpenCLIP's ModifiedResNet image tower (RN50, RN101, RN50x4/x16/x64).

Three-convolution stem with average pooling, bottleneck stages whose strided blocks downsample
by average pooling before the 1x1 convolutions (anti-aliased), and an attention pool: the mean
of the final feature map, prepended to it as a query token with a learned positional embedding,
attends over all positions; `c_proj` maps it to the joint space.

BatchNorm runs in inference mode with the checkpoint's running statistics, which are stored as
(non-trained) leaves next to the affine parameters under open_clip's names (`bn1/weight`,
`bias`, `running_mean`, `running_var`), so one params pytree holds the whole tower. This is
open_clip's behaviour for a locked or `freeze_bn_stats` image tower and the usual choice when
fine-tuning; updating batch statistics during training is not supported (a gradient never
reaches the statistics: they pass through `stop_gradient`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.configs import VisionConfig
from clipjax.models.layers import (
  Dtype,
  check_images,
  dot_product_attention,
  remat_policy,
)

BN_EPS = 1e-5  # torch.nn.BatchNorm2d default


class FrozenBatchNorm(nn.Module):
  """BatchNorm2d in eval mode over the channel (last) axis: (x - mean) / sqrt(var + eps) * w + b."""
  zero_init: bool = False  # open_clip zero-initialises each bottleneck's last BN scale
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    weight = self.param("weight", nn.initializers.zeros if self.zero_init else nn.initializers.ones,
                        (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = jax.lax.stop_gradient(self.param("running_mean", nn.initializers.zeros, (c,)))
    var = jax.lax.stop_gradient(self.param("running_var", nn.initializers.ones, (c,)))
    scale = weight * jax.lax.rsqrt(var + BN_EPS)
    return (x * scale.astype(self.dtype) + (bias - mean * scale).astype(self.dtype))


# torch's default Conv2d init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), as open_clip
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _conv(features: int, kernel: int, dtype: Dtype, name: str, stride: int = 1) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((kernel // 2,) * 2,) * 2, use_bias=False, dtype=dtype, name=name,
                 kernel_init=_TORCH_CONV_INIT)


def _avg_pool(x: jax.Array, size: int) -> jax.Array:
  return x if size == 1 else nn.avg_pool(x, (size, size), strides=(size, size))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> avgpool(stride) -> 1x1 (x4 channels), plus the (pooled, projected) input."""
  planes: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    relu = nn.relu
    out = relu(FrozenBatchNorm(dtype=self.dtype, name="bn1")(
        _conv(self.planes, 1, self.dtype, "conv1")(x)))
    out = relu(FrozenBatchNorm(dtype=self.dtype, name="bn2")(
        _conv(self.planes, 3, self.dtype, "conv2")(out)))
    out = _avg_pool(out, self.stride)
    out = FrozenBatchNorm(True, self.dtype, name="bn3")(
        _conv(self.planes * 4, 1, self.dtype, "conv3")(out))
    if self.stride > 1 or x.shape[-1] != self.planes * 4:
      # torch names: downsample.-1 (AvgPool, no params), downsample.0 (conv), downsample.1 (BN)
      x = FrozenBatchNorm(dtype=self.dtype, name="downsample_1")(
          _conv(self.planes * 4, 1, self.dtype, "downsample_0")(_avg_pool(x, self.stride)))
    return relu(out + x)


class AttentionPool(nn.Module):
  """Multi-head attention of the mean token over [mean; positions] -> [N, out_dim]."""
  heads: int
  out_dim: int
  dtype: Dtype = jnp.float32
  attention: str = "auto"  # the attention kernel (layers.ATTENTION_KERNELS)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    std = c ** -0.5
    x = x.reshape(n, h * w, c)
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
    pos = self.param("positional_embedding", nn.initializers.normal(std), (h * w + 1, c))
    x = x + pos.astype(x.dtype)
    dense = lambda width, name: nn.Dense(width, dtype=self.dtype, name=name,
                                         kernel_init=nn.initializers.normal(std))
    head_dim = c // self.heads
    q = dense(c, "q_proj")(x[:, :1]).reshape(n, 1, self.heads, head_dim)
    k = dense(c, "k_proj")(x).reshape(n, h * w + 1, self.heads, head_dim)
    v = dense(c, "v_proj")(x).reshape(n, h * w + 1, self.heads, head_dim)
    out = dot_product_attention(q, k, v, self.attention).reshape(n, c)
    return dense(self.out_dim, "c_proj")(out)


class ModifiedResNet(nn.Module):
  cfg: VisionConfig
  embed_dim: int
  dtype: Dtype = jnp.float32
  remat: bool | str = False  # never scanned: the stages' blocks differ in shape
  attention: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: [N, S, S, 3] normalised pixels (NHWC) -> [N, embed_dim] float32."""
    cfg = self.cfg
    check_images(images, cfg.image_size, "ModifiedResNet")
    x = images.astype(self.dtype)
    width = cfg.width
    for i, (features, stride) in enumerate(((width // 2, 2), (width // 2, 1), (width, 1)), 1):
      x = nn.relu(FrozenBatchNorm(dtype=self.dtype, name=f"bn{i}")(
          _conv(features, 3, self.dtype, f"conv{i}", stride)(x)))
    x = _avg_pool(x, 2)
    policy = remat_policy(self.remat)
    block = Bottleneck if policy is None else nn.remat(Bottleneck, policy=policy)
    for stage, blocks in enumerate(cfg.layers):
      for b in range(blocks):
        stride = 2 if stage > 0 and b == 0 else 1
        x = block(width * 2 ** stage, stride, self.dtype, name=f"layer{stage + 1}_{b}")(x)
    out = AttentionPool(cfg.heads, self.embed_dim, self.dtype, self.attention,
                        name="attnpool")(x)
    return out.astype(jnp.float32)
