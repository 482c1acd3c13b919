"""Building blocks shared by the models, with PyTorch semantics.

Everything here is NHWC. Convolutions carry their own parameters so that the
PyTorch default initialisation (which needs the input fan) and reflection
padding can be expressed; BatchNorm updates its running variance with the
*unbiased* batch variance as the reference's ``torch.nn.BatchNorm2d``
does, which ``flax.linen.BatchNorm`` does not.

Parameter and variable names follow flax (``kernel``/``bias``,
``scale``/``bias``, ``batch_stats: mean/var``) so optimisers and checkpoint
code treat them like stock flax layers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Callable[..., jax.Array]

# torch ``nn.Conv2d`` default: kaiming_uniform(a=sqrt(5)) gives the bound
# sqrt(1 / fan_in), i.e. variance scale 1/3 with a uniform distribution.
torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")
# torchvision ResNet: kaiming_normal(mode="fan_out", nonlinearity="relu").
resnet_kernel_init = nn.initializers.variance_scaling(
    2.0, "fan_out", "normal")


# Rematerialisation policies (``config.model.remat``): which parts of the
# network keep only their inputs for the backward pass and recompute their
# activations there, trading compute for memory.
#   none           every activation is kept (fastest)
#   encoder_stage  each ResNet stage (layer1..layer4) is recomputed as a unit
#   encoder_block  each ResNet residual block is recomputed
#   decoder_block  each decoder block (ASPP, ConvBlocks) is recomputed
#   full           encoder_block + decoder_block, in every encoder (the pose
#                  net's too): the least memory
REMAT_POLICIES = ("none", "encoder_stage", "encoder_block", "decoder_block",
                  "full")


def check_remat(policy: str) -> str:
  """Returns ``policy`` if it is one of ``REMAT_POLICIES``, else raises."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"config.model.remat={policy!r} is not a remat policy; "
                     f"choose one of {REMAT_POLICIES}")
  return policy


def encoder_remat(policy: str) -> str:
  """The ``ResNetEncoder.remat`` of a policy: "none", "stage" or "block"."""
  return {"encoder_stage": "stage", "encoder_block": "block",
          "full": "block"}.get(check_remat(policy), "none")


def decoder_remat(policy: str) -> bool:
  """Whether a policy rematerialises the decoder blocks."""
  return check_remat(policy) in ("decoder_block", "full")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(nn.Module):
  """2-D convolution matching ``torch.nn.Conv2d`` (+ optional padding mode).

  Attributes:
    features: output channels.
    kernel_size: ``k`` or ``(kh, kw)``.
    stride: ``s`` or ``(sh, sw)``.
    padding: symmetric padding per side, as the torch ``padding`` argument.
    dilation: kernel dilation.
    use_bias: whether to add a bias (initialised U(+-1/sqrt(fan_in)) as in
      torch).
    pad_mode: ``"zeros"`` or ``"reflect"`` (``nn.ReflectionPad2d``).
    kernel_init: kernel initialiser; defaults to the torch default.
    dtype: compute dtype; parameters are stored in ``param_dtype``.
  """
  features: int
  kernel_size: int | Sequence[int] = 3
  stride: int | Sequence[int] = 1
  padding: int = 0
  dilation: int = 1
  use_bias: bool = True
  pad_mode: str = "zeros"
  kernel_init: Initializer = torch_default_kernel_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution.

    Args:
      x: ``[B, H, W, C_in]``.

    Returns:
      ``[B, H', W', features]`` in ``dtype``.
    """
    kh, kw = _pair(self.kernel_size)
    in_ch = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init,
                        (kh, kw, in_ch, self.features), self.param_dtype)
    p = self.padding
    if self.pad_mode == "reflect":
      if p:
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
      pads = ((0, 0), (0, 0))
    elif self.pad_mode == "zeros":
      pads = ((p, p), (p, p))
    else:
      raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got "
                       f"{self.pad_mode!r}")
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=_pair(self.stride), padding=pads,
        rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bound = 1.0 / math.sqrt(in_ch * kh * kw)
      bias = self.param(
          "bias",
          lambda k, s, d: jax.random.uniform(k, s, d, -bound, bound),
          (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class BatchNorm(nn.Module):
  """``torch.nn.BatchNorm2d`` over the channel (last) axis.

  Train mode normalises with the biased batch variance and updates the
  running variance with the unbiased one (momentum 0.1 in torch terms, i.e.
  ``running = 0.9 * running + 0.1 * batch``). Statistics are computed in
  float32 over every non-channel axis of the *global* batch: under ``jit``
  with a batch sharded over devices this is synchronised BatchNorm, unlike
  the per-GPU BN of the PyTorch reference. Running statistics are not
  updated while the module is being initialised.

  Attributes:
    use_running_average: if True, normalise with the running statistics and
      leave them unchanged (eval mode / frozen BN).
    momentum: flax-style momentum (weight of the old running value).
    epsilon: added to the variance.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises ``x`` ``[..., C]``; returns the same shape in ``dtype``."""
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean",
                            lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var",
                           lambda: jnp.ones((c,), jnp.float32))
    xf = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axes)
      var = jnp.mean(jnp.square(xf - mean), axes)
      if not self.is_initializing():
        n = math.prod(x.shape[:-1])
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
        ra_var.value = m * ra_var.value + (1.0 - m) * unbiased
    mul = jax.lax.rsqrt(var + self.epsilon) * scale
    y = (xf - mean) * mul + bias
    return y.astype(self.dtype)


def upsample_nearest2x(x: jax.Array) -> jax.Array:
  """``F.interpolate(scale_factor=2, mode="nearest")``: ``[B,H,W,C]`` ->
  ``[B,2H,2W,C]``."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """Bilinear resize with ``align_corners=False`` and no antialiasing.

  Matches ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel
  centres, edge clamping) for up- and downsampling.

  Args:
    x: ``[B, H, W, C]``.
    size: target ``(h, w)``.

  Returns:
    ``[B, h, w, C]`` in the dtype of ``x``.
  """
  h, w = int(size[0]), int(size[1])
  if (h, w) == tuple(x.shape[1:3]):
    return x
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), "bilinear",
                          antialias=False).astype(x.dtype)


class ConvBlock(nn.Module):
  """Monodepth2 ConvBlock: reflect pad 1, 3x3 conv + bias, [BN], ELU.

  The reference's optional Dropout2d is never enabled in any config and is
  not provided.

  Attributes:
    features: output channels.
    batch_norm: whether a BatchNorm follows the convolution.
  """
  features: int
  batch_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """``[B, H, W, C_in]`` -> ``[B, H, W, features]``."""
    x = Conv2d(self.features, 3, padding=1, pad_mode="reflect",
               dtype=self.dtype, name="conv")(x)
    if self.batch_norm:
      x = BatchNorm(use_running_average=not train, dtype=self.dtype,
                    name="bn")(x)
    return nn.elu(x)
