"""Pose network: monodepth2 "separate_resnet", ``pose_model_input: pairs``.

A ResNet-18 encoder on two frames stacked along channels (6 inputs) and a
decoder on its layer4 features: squeeze 1x1 -> ReLU, 3x3 -> ReLU, 3x3 ->
ReLU, 1x1 -> 12, spatial mean, x0.01, reshaped to ``[B, 2, 1, 6]`` of which
only prediction 0 is used.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.layers import Conv2d
from sdeseg_jax.models.resnet import ResNetEncoder

# The decoder's output scale (x0.01 after the spatial mean).
POSE_SCALE = 0.01

Dtype = Any


class PoseDecoder(nn.Module):
  """monodepth2 ``PoseDecoder(num_input_features=1, frames_to_predict=2)``.

  Submodules ``squeeze``, ``pose_0``, ``pose_1``, ``pose_2`` are the
  reference's ``net.0`` .. ``net.3``.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, f4: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Regresses the relative pose.

    Args:
      f4: ``[B, h, w, C]`` last encoder feature of the stacked pair.

    Returns:
      ``(axisangle [B, 3], translation [B, 3])`` float32.
    """
    conv = lambda f, k, p, name: Conv2d(  # noqa: E731
        f, k, padding=p, dtype=self.dtype, name=name)
    x = nn.relu(conv(256, 1, 0, "squeeze")(f4))
    x = nn.relu(conv(256, 3, 1, "pose_0")(x))
    x = nn.relu(conv(256, 3, 1, "pose_1")(x))
    x = conv(12, 1, 0, "pose_2")(x)
    # The channel layout [2, 1, 6] of torch's view(-1, 2, 1, 6) is the last
    # axis here as well (12 = 2 predictions x 6 values).
    x = POSE_SCALE * jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = x.reshape(x.shape[0], 2, 6)[:, 0]
    return x[:, :3], x[:, 3:]


class PoseNet(nn.Module):
  """Pose encoder (2-image ResNet) + ``PoseDecoder``.

  Attributes:
    depth: encoder depth (18 in the reference; 10 for tiny tests).
    width: encoder base width.
    frozen_bn: encoder BatchNorm always in eval mode.
    remat: the encoder's ``ResNetEncoder.remat``.
  """
  depth: int = 18
  width: int = 64
  frozen_bn: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, pair: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """Predicts the pose between two frames.

    Args:
      pair: ``[B, H, W, 6]`` float in [0, 1], the two frames in temporal
        order concatenated along channels.
      train: BatchNorm mode of the encoder.

    Returns:
      ``(axisangle [B, 3], translation [B, 3])`` float32, to be turned into
      ``cam_T_cam`` with ``invert = offset < 0``.
    """
    feats = ResNetEncoder(self.depth, 32, num_input_images=2,
                          width=self.width, frozen_bn=self.frozen_bn,
                          dtype=self.dtype, remat=self.remat,
                          name="encoder")(pair, train)
    return PoseDecoder(dtype=self.dtype, name="decoder")(feats["f4"])



def with_translation_prior(pose_params: Any, translation) -> Any:
  """Starts the pose net at a given translation (a driving-camera prior).

  Sets the bias of the decoder's last convolution so that, before any
  training, the predicted translation of a (first, second) frame pair is
  ``translation`` plus the small contribution of the randomly initialised
  kernel; the rotation channels are left as they are. Use
  ``(0, 0, -t)`` for a camera that moves forward (OpenCV axes: points come
  closer by ``t`` in z). Without such a prior a randomly initialised pose
  net can settle on a wrong, input-independent direction of travel (see
  ``benchmarks/sde_minicity.py``); the reference never meets this because
  its pose encoder always starts from ImageNet weights.

  Args:
    pose_params: the ``PoseNet`` parameters (``{"encoder", "decoder"}``).
    translation: 3 floats.

  Returns:
    A copy of ``pose_params`` with the new bias.
  """
  t = jnp.asarray(translation, jnp.float32)
  if t.shape != (3,):
    raise ValueError(f"translation prior must be 3 floats, got {translation}")
  bias = jnp.asarray(pose_params["decoder"]["pose_2"]["bias"])
  # Channels [0:6] are the pose the net uses (axisangle 0:3, translation
  # 3:6); the torch layout predicts 2 poses and keeps the first.
  bias = bias.at[3:6].set(t / POSE_SCALE)
  decoder = dict(pose_params["decoder"])
  decoder["pose_2"] = dict(decoder["pose_2"], bias=bias)
  return dict(pose_params, decoder=decoder)
