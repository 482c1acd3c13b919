"""Self-supervised monocular depth loss of monodepth2 (REFERENCE_SPEC 3).

Multi-scale minimum reprojection with auto-masking plus edge-aware
smoothness. Everything runs in float32; the loops over scales and frame
offsets are static Python loops (unrolled at trace time).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from sdeseg_jax.geometry import transforms
from sdeseg_jax.geometry import warp
from sdeseg_jax.losses import photometric
from sdeseg_jax.losses import smoothness as smoothness_lib


def _as_float_image(x, name: str):
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
        f"{name} must be a float image in [0, 1], got dtype {x.dtype}; "
        "convert uint8 batches with x / 255 first")
  return x.astype(jnp.float32)


def _pyramid_image(pyramid: Mapping[Any, Any], scale: int):
  for key in (scale, f"s{scale}"):
    if key in pyramid:
      return pyramid[key]
  raise KeyError(
      f"pyramid has no image for scale {scale} (looked for keys {scale!r} "
      f"and 's{scale}'); has {sorted(map(str, pyramid))}")


def monodepth_loss(disps, color, pyramid, cam_T_cam, K, inv_K, rng, cfg):
  """monodepth2 ``generate_images_pred`` + ``compute_losses``.

  For every scale ``s``: ``disp_s`` is upsampled (bilinear, half-pixel) to
  full resolution and turned into depth; each source frame (scale 0,
  non-augmented) is warped into the centre view; the per-pixel minimum over
  [identity errors, reprojection errors] is averaged; the smoothness of the
  native-resolution ``disp_s`` against the centre image of that scale is
  added with weight ``smoothness_weight / 2**s``. The total is the mean over
  scales.

  Args:
    disps: ``{s: [B, H/2^s, W/2^s, 1]}`` sigmoid disparities for every ``s``
      in ``cfg.scales``.
    color: ``[B, T, H, W, 3]`` float frames in ``[0, 1]`` (non-augmented),
      ordered by ``sorted(cfg.frame_offsets)``.
    pyramid: ``{s: [B, H/2^s, W/2^s, 3]}`` float centre-frame images for
      ``s >= 1`` (keys ``s`` or ``"s{s}"``); scale 0 is taken from ``color``.
    cam_T_cam: ``{offset: [B, 4, 4]}`` transform from the centre camera to
      the camera of each nonzero offset.
    K: ``[B, 4, 4]`` (or ``[4, 4]``) scale-0 intrinsics in pixels.
    inv_K: ``[B, 4, 4]`` (or ``[4, 4]``) their inverse.
    rng: jax PRNG key for the ``identity_noise * normal`` tie-breaking noise
      (one draw per scale, as the reference); may be None when that noise
      is off (``identity_noise == 0`` or ``automask`` False).
    cfg: ``sde_loss_config()``-like ConfigDict: ``min_depth``, ``max_depth``,
      ``scales``, ``frame_offsets``, ``ssim_weight``, ``smoothness_weight``,
      ``automask``, ``avg_reprojection``, ``identity_noise``.

  Returns:
    ``(loss, aux)``: the scalar float32 loss and a dict with, per scale,
    ``"loss/s{s}"``, ``"photometric/s{s}"``, ``"smoothness/s{s}"`` and
    ``"automask_fraction/s{s}"`` (fraction of pixels where an identity error
    was the minimum; 0 without automask) scalars; plus, at scale 0,
    ``"warped"`` ``{offset: [B, H, W, 3]}``, ``"depth"`` ``[B, H, W, 1]``,
    ``"reprojection_selected"`` ``[B, H, W]`` (1 where a warped source won,
    monodepth2's ``identity_selection``) and ``"min_error"`` ``[B, H, W]``.
  """
  offsets = tuple(sorted(cfg.frame_offsets))
  if 0 not in offsets:
    raise ValueError(f"cfg.frame_offsets must contain 0, got {offsets}")
  sources = tuple(f for f in offsets if f != 0)
  if not sources:
    raise ValueError("cfg.frame_offsets needs at least one nonzero offset")
  color = _as_float_image(color, "color")
  if color.ndim != 5 or color.shape[1] != len(offsets):
    raise ValueError(
        f"color must be [B, T={len(offsets)}, H, W, 3] for frame offsets "
        f"{offsets}, got {color.shape}")
  b, _, h, w, _ = color.shape
  target = color[:, offsets.index(0)]
  source_imgs = {f: color[:, offsets.index(f)] for f in sources}
  for f in sources:
    if f not in cam_T_cam:
      raise KeyError(
          f"cam_T_cam has no transform for frame offset {f}; has "
          f"{sorted(cam_T_cam)}")
  scales = tuple(cfg.scales)
  ssim_weight = cfg.ssim_weight
  automask = cfg.automask
  noise_scale = cfg.identity_noise
  if automask and noise_scale and rng is None:
    raise ValueError(
        "monodepth_loss needs an rng for the identity tie-breaking noise "
        f"(cfg.identity_noise={noise_scale})")

  def pe(pred):
    return photometric.photometric_error(pred, target, ssim_weight)

  def reduce_frames(errors):
    # [B, H, W, F]; averaging keeps a trailing axis of 1 as the reference.
    if cfg.avg_reprojection:
      return jnp.mean(errors, axis=-1, keepdims=True)
    return errors

  # Validate every input before tracing any computation.
  disps_f32, smooth_imgs = {}, {}
  for s in scales:
    if s not in disps:
      raise KeyError(f"disps has no disparity for scale {s}; has "
                     f"{sorted(disps)}")
    disp = jnp.asarray(disps[s]).astype(jnp.float32)
    if disp.ndim != 4 or disp.shape[0] != b or disp.shape[-1] != 1:
      raise ValueError(f"disps[{s}] must be [B={b}, h, w, 1], got "
                       f"{disp.shape}")
    disps_f32[s] = disp
    smooth_imgs[s] = target if s == 0 else _as_float_image(
        _pyramid_image(pyramid, s), f"pyramid[{s}]")

  identity, num_identity = None, 0
  if automask:
    # Identical at every scale (scale-0 images); the noise is redrawn.
    identity = reduce_frames(
        jnp.stack([pe(source_imgs[f]) for f in sources], axis=-1))
    num_identity = identity.shape[-1]

  total = jnp.zeros((), jnp.float32)
  aux = {}
  for i, s in enumerate(scales):
    disp = disps_f32[s]
    disp_full = warp.resize_bilinear_half_pixel(disp, (h, w))
    _, depth = transforms.disp_to_depth(
        disp_full, cfg.min_depth, cfg.max_depth)
    warped = {f: warp.inverse_warp(source_imgs[f], depth, cam_T_cam[f], K,
                                   inv_K)
              for f in sources}
    reprojection = reduce_frames(
        jnp.stack([pe(warped[f]) for f in sources], axis=-1))
    if automask:
      ident = identity
      if noise_scale:
        ident = ident + noise_scale * jax.random.normal(
            jax.random.fold_in(rng, i), ident.shape, jnp.float32)
      combined = jnp.concatenate([ident, reprojection], axis=-1)
    else:
      combined = reprojection
    # argmin + gather rather than jnp.min: on exact ties the gradient goes to
    # the first minimum only, as torch.min(dim) does.
    idx = jnp.argmin(combined, axis=-1)
    min_error = jnp.take_along_axis(combined, idx[..., None], axis=-1)[..., 0]
    photo = jnp.mean(min_error)
    smooth = smoothness_lib.smoothness(disp, smooth_imgs[s])
    loss_s = photo + cfg.smoothness_weight * smooth / (2 ** s)
    total = total + loss_s
    selected = (idx >= num_identity).astype(jnp.float32)
    aux[f"loss/s{s}"] = loss_s
    aux[f"photometric/s{s}"] = photo
    aux[f"smoothness/s{s}"] = smooth
    aux[f"automask_fraction/s{s}"] = 1.0 - jnp.mean(selected)
    if s == 0:
      aux["warped"] = warped
      aux["depth"] = depth
      aux["reprojection_selected"] = selected
      aux["min_error"] = min_error
  return total / len(scales), aux
