"""ResNet encoder (torchvision v1.5 structure) returning a feature dict.

As in the reference: input in [0, 1] is normalised with (x - 0.45) / 0.225;
the encoder returns ``f0`` = ReLU(BN(conv1)) at 1/2 resolution (before the
max-pool) and ``f1``..``f4`` = layer1..layer4. Output stride 16 follows
torchvision's ``replace_stride_with_dilation=[False, False, True]``: layer4
block 0 keeps dilation 1 with a stride-1 1x1 downsample, blocks 1.. use
dilation 2 (padding 2).

Submodule names mirror torchvision's parameter names with ``.`` replaced by
``_`` (``layer3_5/conv2``, ``layer4_0/downsample_0``), so that
``sdeseg_jax.models.pretrained`` maps state dicts mechanically.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.layers import BatchNorm, Conv2d, resnet_kernel_init

Dtype = Any

# depth -> (block type, blocks per stage). Depth 10 is a test-only variant.
RESNET_SPECS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def num_ch_enc(depth: int, width: int = 64) -> tuple[int, ...]:
  """Channels of ``f0..f4`` for a ResNet of ``depth`` and base ``width``."""
  if depth not in RESNET_SPECS:
    raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, "
                     f"got {depth}")
  expansion = 4 if RESNET_SPECS[depth][0] == "bottleneck" else 1
  return (width,) + tuple(width * 2**i * expansion for i in range(4))


def _conv_bn(block: nn.Module, x: jax.Array, features: int, kernel: int,
             stride: int, dilation: int, conv_name: str,
             bn_name: str) -> jax.Array:
  """Bias-free conv (torchvision padding = dilation for 3x3) then BatchNorm.

  Called inside a block's compact ``__call__``, so the submodules belong to
  that block under the torchvision names given.
  """
  pad = dilation if kernel == 3 else 0
  y = Conv2d(features, kernel, stride, pad, dilation, use_bias=False,
             kernel_init=resnet_kernel_init, dtype=block.dtype,
             name=conv_name)(x)
  return BatchNorm(use_running_average=block.bn_eval, dtype=block.dtype,
                   name=bn_name)(y)


class BasicBlock(nn.Module):
  """torchvision BasicBlock (3x3, 3x3). ``dilation`` applies to both convs.

  torchvision refuses dilation > 1 in BasicBlock; here it is allowed (used
  only by tiny OS16 test models) and applied to both 3x3 convolutions.
  """
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  bn_eval: bool = True
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.dilation
    out = nn.relu(_conv_bn(self, x, self.planes, 3, self.stride, d, "conv1",
                           "bn1"))
    out = _conv_bn(self, out, self.planes, 3, 1, d, "conv2", "bn2")
    if self.downsample:
      x = _conv_bn(self, x, self.planes, 1, self.stride, 1, "downsample_0",
                   "downsample_1")
    return nn.relu(out + x)


class Bottleneck(nn.Module):
  """torchvision Bottleneck v1.5: 1x1, 3x3 (stride, dilation), 1x1 (x4)."""
  planes: int
  stride: int = 1
  dilation: int = 1
  downsample: bool = False
  bn_eval: bool = True
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.dilation
    out = nn.relu(_conv_bn(self, x, self.planes, 1, 1, 1, "conv1", "bn1"))
    out = nn.relu(_conv_bn(self, out, self.planes, 3, self.stride, d, "conv2",
                           "bn2"))
    out = _conv_bn(self, out, self.planes * 4, 1, 1, 1, "conv3", "bn3")
    if self.downsample:
      x = _conv_bn(self, x, self.planes * 4, 1, self.stride, 1,
                   "downsample_0", "downsample_1")
    return nn.relu(out + x)


class ResNetEncoder(nn.Module):
  """ResNet feature extractor with the monodepth2 input normalisation.

  BatchNorm note: under ``jit`` with a data-sharded batch the statistics are
  global (synchronised BN), unlike the reference's per-GPU BN.

  Attributes:
    depth: 10 (test-only, [1,1,1,1] basic blocks), 18, 34, 50 or 101.
    output_stride: 32, or 16 (layer4 dilated, torchvision semantics).
    num_input_images: frames stacked along channels (2 for the pose
      encoder: 6 input channels).
    width: base channels (64 in every real model; smaller for tests).
    frozen_bn: if True, BatchNorm always uses (and keeps) its running
      statistics, whatever ``train`` says.
    dtype: compute dtype (parameters stay float32).
    remat: "none", "stage" (each of layer1..layer4 recomputed in the
      backward pass) or "block" (each residual block); the function and the
      parameter names are the same whatever it is.
  """
  depth: int = 101
  output_stride: int = 32
  num_input_images: int = 1
  width: int = 64
  frozen_bn: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False
               ) -> dict[str, jax.Array]:
    """Extracts features.

    Args:
      x: ``[B, H, W, 3 * num_input_images]`` float in [0, 1].
      train: BatchNorm uses batch statistics and updates running ones.

    Returns:
      ``{"f0": [B,H/2,W/2,w], "f1": [B,H/4,W/4,c1], "f2": 1/8,
      "f3": 1/16, "f4": 1/32 (1/16 at output stride 16)}`` in ``dtype``,
      channels as in ``num_ch_enc(depth, width)``.
    """
    if self.depth not in RESNET_SPECS:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, "
                       f"got {self.depth}")
    if self.output_stride not in (16, 32):
      raise ValueError(f"output_stride must be 16 or 32, got "
                       f"{self.output_stride}")
    expected_ch = 3 * self.num_input_images
    if x.shape[-1] != expected_ch:
      raise ValueError(f"ResNetEncoder expects {expected_ch} input channels "
                       f"(num_input_images={self.num_input_images}), got "
                       f"input of shape {x.shape}")
    if self.remat not in ("none", "stage", "block"):
      raise ValueError(f"ResNetEncoder.remat must be 'none', 'stage' or "
                       f"'block', got {self.remat!r}")
    kind, stages = RESNET_SPECS[self.depth]
    block_cls = Bottleneck if kind == "bottleneck" else BasicBlock
    block = nn.remat(block_cls) if self.remat == "block" else block_cls
    bn_eval = self.frozen_bn or not train

    x = (x.astype(jnp.float32) - 0.45) / 0.225
    x = Conv2d(self.width, 7, 2, 3, use_bias=False,
               kernel_init=resnet_kernel_init, dtype=self.dtype,
               name="conv1")(x)
    x = BatchNorm(use_running_average=bn_eval, dtype=self.dtype,
                  name="bn1")(x)
    f0 = nn.relu(x)
    feats = {"f0": f0}
    x = nn.max_pool(f0, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    inplanes = self.width
    dilation = 1
    for li, n_blocks in enumerate(stages):
      planes = self.width * 2**li
      stride = 1 if li == 0 else 2
      previous_dilation = dilation
      if li == 3 and self.output_stride == 16:
        dilation *= stride
        stride = 1
      downsample = stride != 1 or inplanes != planes * block_cls.expansion

      def stage(module, x, li=li, planes=planes, stride=stride,
                previous_dilation=previous_dilation, dilation=dilation,
                downsample=downsample, n_blocks=n_blocks):
        del module  # the blocks below are children of ``self``
        for bi in range(n_blocks):
          x = block(
              planes,
              stride=stride if bi == 0 else 1,
              dilation=previous_dilation if bi == 0 else dilation,
              downsample=downsample and bi == 0,
              bn_eval=bn_eval, dtype=self.dtype,
              name=f"layer{li + 1}_{bi}")(x)
        return x
      if self.remat == "stage":
        x = nn.remat(stage)(self, x)
      else:
        x = stage(self, x)
      inplanes = planes * block_cls.expansion
      feats[f"f{li + 1}"] = x
    return feats
