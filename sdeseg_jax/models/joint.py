"""Complete networks: SDE (depth + pose) and joint segmentation-depth nets.

``SDENet`` is the self-supervised depth estimator of the pretraining stages;
``SegDepthNet`` is the shared encoder with a PAD-Net head or the transfer head
(``JointSegDepthDec``), plus the pose net for the multi-task SDE loss
(the reference's ``JointSegmentationMonodepth``). ``from_config`` builds
either from ``configs.common.model_config``.

Top-level parameter collections (for LR groups in ``train/optim.py``):
``encoder``, ``depth`` (SDE depth decoder / transfer-mode depth decoder),
``pad`` (``pad/depth_dec``, ``pad/sa_seg`` = depth group; ``pad/seg_dec``,
``pad/sa_depth``, ``pad/seg_*_head`` = segmentation group), ``seg_head``
(transfer head incl. its own ``unet_dec``), ``pose`` and ``imnet_encoder``
(frozen ImageNet copy; exclude it from the optimiser).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.decoders import UNetDecoder, decoder_kwargs
from sdeseg_jax.models.layers import (BatchNorm, Conv2d, check_remat,
                                      decoder_remat, encoder_remat,
                                      resize_bilinear)
from sdeseg_jax.models.pad import PADNet
from sdeseg_jax.models.pose import PoseNet
from sdeseg_jax.models.resnet import ResNetEncoder

Dtype = Any


def _check_frames(images: jax.Array, frame_offsets: Sequence[int]) -> int:
  """Validates ``[B, T, H, W, 3]`` against the offsets; returns the centre."""
  if images.ndim != 5 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, T, H, W, 3], got {images.shape}")
  offsets = tuple(frame_offsets)
  if len(offsets) != images.shape[1] or 0 not in offsets:
    raise ValueError(f"frame_offsets {offsets} must contain 0 and have one "
                     f"entry per frame of images {images.shape}")
  if list(offsets) != sorted(offsets):
    raise ValueError(f"frame_offsets must be sorted, got {offsets}")
  return offsets.index(0)


def pose_outputs(pose_net: nn.Module, images: jax.Array,
                 frame_offsets: Sequence[int], train: bool
                 ) -> dict[str, dict[int, jax.Array]]:
  """Runs the pose net on every (offset, centre) pair in temporal order.

  Args:
    pose_net: a bound ``PoseNet``.
    images: ``[B, T, H, W, 3]`` float in [0, 1].
    frame_offsets: sorted offsets of the T frames, containing 0.
    train: BatchNorm mode (each pair is a separate forward, as in the
      reference, so running statistics are updated once per pair).

  Returns:
    ``{"axisangle": {f: [B, 3]}, "translation": {f: [B, 3]}}`` float32 for
    every non-zero offset f. Pairs are ``concat(I_f, I_0)`` for f < 0 and
    ``concat(I_0, I_f)`` for f > 0.
  """
  center = _check_frames(images, frame_offsets)
  out = {"axisangle": {}, "translation": {}}
  for t, f in enumerate(frame_offsets):
    if f == 0:
      continue
    a, b = (t, center) if f < 0 else (center, t)
    pair = jnp.concatenate([images[:, a], images[:, b]], axis=-1)
    axisangle, translation = pose_net(pair, train)
    out["axisangle"][f] = axisangle
    out["translation"][f] = translation
  return out


class SDENet(nn.Module):
  """Self-supervised depth estimator: encoder + depth decoder + pose net.

  Attributes:
    encoder_depth: ResNet depth of the depth encoder.
    output_stride: 16 or 32.
    width: encoder base width (64 except in tiny tests).
    frozen_encoder_bn: encoder BN always in eval mode.
    decoder: decoder variant name.
    use_pose: build the pose net.
    pose_depth: pose encoder depth (18).
    imnet_encoder: also build a frozen eval-mode copy of the encoder (same
      architecture, to be loaded with ImageNet weights) for the feature
      distance of SDE stage 2.
  """
  encoder_depth: int = 101
  output_stride: int = 16
  width: int = 64
  frozen_encoder_bn: bool = False
  decoder: str = "dec6"
  use_pose: bool = True
  pose_depth: int = 18
  imnet_encoder: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"  # layers.REMAT_POLICIES

  @nn.compact
  def __call__(self, images: jax.Array, frame_offsets: Sequence[int] = (0,),
               train: bool = False, pose: bool = True) -> dict[str, Any]:
    """Predicts disparities (and poses) for the centre frame.

    Args:
      images: ``[B, T, H, W, 3]`` float in [0, 1] (``color_aug``), frames
        ordered by ``frame_offsets``.
      frame_offsets: sorted offsets, containing 0; static Python ints (close
        over them, do not pass them as traced jit arguments).
      train: BN batch statistics and ASPP dropout (``"dropout"`` rng).
      pose: run the pose net (ignored when ``use_pose`` is False or there is
        a single frame); False for single-frame use such as depth export.

    Returns:
      ``{"disp": {s: [B, H/2^s, W/2^s, 1] float32}, "upconv": {i: ...},
      "features": {"f0".."f4"}, "axisangle": {f: [B, 3]}, "translation":
      {f: [B, 3]}}``; with ``imnet_encoder`` also ``"imnet_f4"`` (stop-
      gradient ImageNet-encoder f4, same shape as ``features["f4"]``).
    """
    center = _check_frames(images, frame_offsets)
    x = images[:, center]
    feats = ResNetEncoder(self.encoder_depth, self.output_stride,
                          width=self.width, frozen_bn=self.frozen_encoder_bn,
                          dtype=self.dtype, remat=encoder_remat(self.remat),
                          name="encoder")(x, train)
    dec = UNetDecoder(**decoder_kwargs(self.decoder), dtype=self.dtype,
                      remat=decoder_remat(self.remat),
                      name="depth")(feats, train)
    out = {"disp": dec["disp"], "upconv": dec["upconv"], "features": feats}
    if self.use_pose and pose and len(frame_offsets) > 1:
      out.update(pose_outputs(
          PoseNet(self.pose_depth, self.width, dtype=self.dtype,
                  remat="block" if self.remat == "full" else "none",
                  name="pose"),
          images, frame_offsets, train))
    if self.imnet_encoder:
      imnet = ResNetEncoder(self.encoder_depth, self.output_stride,
                            width=self.width, frozen_bn=True,
                            dtype=self.dtype, name="imnet_encoder")(x, False)
      out["imnet_f4"] = jax.lax.stop_gradient(imnet["f4"])
    return out


class JointSegDepthDec(nn.Module):
  """Transfer segmentation head (``joint_seg_depth_dec``) with its own
  U-Net decoder.

  Layer indices: 0..4 are encoder features f0..f4, L > 4 is decoder stage
  ``9 - L`` (9 = upconv0 at full resolution). Each chosen layer is projected
  by a bias-free 1x1 conv to ``layer_out_channels`` and resized bilinearly to
  ``full_res // output_stride``; the concatenation goes through an optional
  3x3 conv + BN + ReLU + Dropout (``head_inter``) and a 1x1 conv with bias;
  logits are resized back to full resolution if ``output_stride > 1``.

  The own decoder (``unet_dec``) does not compute the unused disparities (the
  reference computes and discards them), so it has no ``dispconv``
  parameters. Main config: ``layers=(9,)``, ``output_stride=1``,
  ``head_inter=False``. Data-selection student: ``layers=(8,)``,
  ``output_stride=2``, ``head_inter=True``, ``head_dropout=0``.
  """
  decoder: str = "dec6"
  num_classes: int = 19
  layers: Sequence[int] = (9,)
  output_stride: int = 1
  head_inter: bool = False
  head_dropout: float = 0.1
  layer_out_channels: int = 64
  head_inter_channels: int = 64
  dtype: Dtype = jnp.float32
  remat: bool = False  # UNetDecoder.remat of its decoder

  @nn.compact
  def __call__(self, feats: Mapping[str, jax.Array], train: bool = False
               ) -> jax.Array:
    """Returns logits ``[B, H, W, num_classes]`` float32, where ``(H, W)`` is
    the resolution of decoder stage 0 (the input resolution)."""
    dec = UNetDecoder(**decoder_kwargs(self.decoder), enable_disp=False,
                      dtype=self.dtype, remat=self.remat,
                      name="unet_dec")(feats, train)

    def layer(idx: int) -> jax.Array:
      if 0 <= idx <= 4:
        return feats[f"f{idx}"]
      if 5 <= idx <= 9:
        return dec["upconv"][9 - idx]
      raise ValueError(f"layer index must be in 0..9, got {idx}")

    full = layer(9).shape[1:3]
    size = (full[0] // self.output_stride, full[1] // self.output_stride)
    stacked = []
    for idx in self.layers:
      y = Conv2d(self.layer_out_channels, 1, use_bias=False, dtype=self.dtype,
                 name=f"project_seg{idx}")(layer(idx))
      stacked.append(resize_bilinear(y, size))
    x = jnp.concatenate(stacked, axis=-1)
    if self.head_inter:
      x = Conv2d(self.head_inter_channels, 3, padding=1, use_bias=False,
                 dtype=self.dtype, name="head_1")(x)
      x = nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype,
                            name="head_2")(x))
      x = nn.Dropout(self.head_dropout, deterministic=not train)(x)
    x = Conv2d(self.num_classes, 1, dtype=self.dtype,
               name="head_5" if self.head_inter else "head_2")(x)
    return resize_bilinear(x.astype(jnp.float32), full)


class SegDepthNet(nn.Module):
  """Shared encoder + segmentation head (+ depth decoder, + pose net).

  Attributes:
    encoder_depth, output_stride, width, frozen_encoder_bn: encoder settings.
    decoder: decoder variant name (both decoders of PAD, the transfer head's
      own decoder and the depth decoder).
    seg_head: ``"pad"``, ``"transfer"`` (layers 9, OS1, no inter conv) or
      ``"transfer_student"`` (layers 8, OS2, inter conv, no head dropout).
    num_classes: segmentation classes.
    depth: produce disparities. With ``"pad"`` they come from PAD's depth
      decoder (always built); with a transfer head a separate ``depth``
      decoder is built when True.
    use_pose: build the pose net (multi-task SDE loss).
  """
  encoder_depth: int = 101
  output_stride: int = 16
  width: int = 64
  frozen_encoder_bn: bool = False
  decoder: str = "dec6"
  seg_head: str = "pad"
  num_classes: int = 19
  depth: bool = True
  use_pose: bool = True
  pose_depth: int = 18
  dtype: Dtype = jnp.float32
  remat: str = "none"  # layers.REMAT_POLICIES

  @nn.compact
  def __call__(self, images: jax.Array, frame_offsets: Sequence[int] = (0,),
               train: bool = False, pose: bool = True) -> dict[str, Any]:
    """Segments (and estimates depth for) the centre frame.

    Args:
      images: ``[B, T, H, W, 3]`` float in [0, 1]; ``T = 1`` with offsets
        ``(0,)`` for segmentation-only batches.
      frame_offsets: sorted static offsets, containing 0.
      train: BN batch statistics and dropout (``"dropout"`` rng).
      pose: run the pose net when it exists and T > 1.

    Returns:
      ``{"semantics": [B, H, W, C] float32 logits, "features": {"f0".."f4"}}``
      plus ``"intermediate_semantics"`` ``[B, H/4, W/4, C]`` (PAD),
      ``"disp"``/``"upconv"`` (depth), ``"axisangle"``/``"translation"``
      ``{f: [B, 3]}`` (pose).
    """
    center = _check_frames(images, frame_offsets)
    x = images[:, center]
    feats = ResNetEncoder(self.encoder_depth, self.output_stride,
                          width=self.width, frozen_bn=self.frozen_encoder_bn,
                          dtype=self.dtype, remat=encoder_remat(self.remat),
                          name="encoder")(x, train)
    out: dict[str, Any] = {"features": feats}
    if self.seg_head == "pad":
      pad = PADNet(self.decoder, self.num_classes, dtype=self.dtype,
                   remat=decoder_remat(self.remat),
                   name="pad")(feats, train)
      out["semantics"] = pad["semantics"]
      out["intermediate_semantics"] = pad["intermediate_semantics"]
      out["disp"], out["upconv"] = pad["disp"], pad["upconv"]
    elif self.seg_head in ("transfer", "transfer_student"):
      head_kw = (dict(layers=(9,), output_stride=1, head_inter=False)
                 if self.seg_head == "transfer" else
                 dict(layers=(8,), output_stride=2, head_inter=True,
                      head_dropout=0.0))
      out["semantics"] = JointSegDepthDec(
          self.decoder, self.num_classes, **head_kw, dtype=self.dtype,
          remat=decoder_remat(self.remat),
          name="seg_head")(feats, train)
      if self.depth:
        dec = UNetDecoder(**decoder_kwargs(self.decoder), dtype=self.dtype,
                          remat=decoder_remat(self.remat),
                          name="depth")(feats, train)
        out["disp"], out["upconv"] = dec["disp"], dec["upconv"]
    else:
      raise ValueError(f"seg_head must be 'pad', 'transfer' or "
                       f"'transfer_student', got {self.seg_head!r}")
    if self.use_pose and pose and len(frame_offsets) > 1:
      out.update(pose_outputs(
          PoseNet(self.pose_depth, self.width, dtype=self.dtype,
                  remat="block" if self.remat == "full" else "none",
                  name="pose"),
          images, frame_offsets, train))
    return out


def from_config(cfg: Any) -> nn.Module:
  """Builds the model described by ``configs.common.model_config``.

  Args:
    cfg: the ``config.model`` ConfigDict.

  Returns:
    ``SDENet`` when ``cfg.seg_head == "none"``, else ``SegDepthNet``.
  """
  dtype = jnp.dtype(cfg.dtype)
  common = dict(encoder_depth=cfg.encoder_depth,
                output_stride=cfg.output_stride, width=cfg.width,
                decoder=cfg.decoder,
                use_pose=cfg.pose, pose_depth=cfg.pose_depth, dtype=dtype,
                remat=check_remat(cfg.remat))
  if cfg.seg_head == "none":
    return SDENet(**common, imnet_encoder=cfg.imnet_encoder)
  if cfg.imnet_encoder:
    raise ValueError("config.model.imnet_encoder is only supported with "
                     "seg_head='none' (SDE pretraining)")
  return SegDepthNet(**common, seg_head=cfg.seg_head,
                     num_classes=cfg.num_classes, depth=cfg.depth)
