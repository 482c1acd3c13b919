"""Self-supervised monocular depth loss of monodepth2, as the reference's
``loss/monodepth_loss.py`` uses it.

Multi-scale minimum reprojection with auto-masking plus edge-aware
smoothness. Everything runs in float32; the loops over scales and frame
offsets are static Python loops (unrolled at trace time).

The only draw is the identity tie-breaking noise: ``monodepth_loss`` draws
it (``identity_noise``) and calls ``monodepth_loss_with_noise``, which takes
it as an argument, as does the per-pixel block ``min_reprojection``.
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


def num_identity_channels(cfg) -> int:
  """Channels of the identity errors: 1 when averaged, else one per source."""
  sources = [f for f in cfg.frame_offsets if f != 0]
  return 1 if cfg.avg_reprojection else len(sources)


def identity_noise(rng: jax.Array, shape, cfg) -> dict:
  """The tie-breaking noise of every scale, as ``monodepth_loss`` draws it.

  Args:
    rng: jax key.
    shape: ``(B, H, W, n)`` of the identity errors (``n`` =
      ``num_identity_channels(cfg)``).
    cfg: the loss config (``scales``, ``identity_noise``).

  Returns:
    ``{s: float32 [B, H, W, n]}``: ``identity_noise * N(0, 1)``, redrawn per
    scale (``fold_in(rng, i)`` for the i-th scale, as the reference draws it
    once per scale).
  """
  return {s: cfg.identity_noise * jax.random.normal(
      jax.random.fold_in(rng, i), tuple(shape), jnp.float32)
          for i, s in enumerate(tuple(cfg.scales))}


def min_reprojection(identity, reprojection, noise=None):
  """monodepth2's per-pixel minimum with auto-masking.

  Args:
    identity: ``[B, H, W, n]`` photometric errors of the unwarped source
      frames, or None (no auto-masking).
    reprojection: ``[B, H, W, m]`` errors of the warped source frames.
    noise: ``[B, H, W, n]`` tie-breaking noise added to ``identity``, or
      None.

  Returns:
    ``(min_error [B, H, W], selected [B, H, W])``: the minimum, and 1.0
    where a warped source won (monodepth2's ``identity_selection``). On
    exact ties the first minimum wins (identity before reprojection), and
    so does the gradient, as ``torch.min(dim)``.
  """
  if identity is None:
    combined, num_identity = reprojection, 0
  else:
    ident = identity if noise is None else identity + noise
    combined = jnp.concatenate([ident, reprojection], axis=-1)
    num_identity = identity.shape[-1]
  # argmin + gather rather than jnp.min: on exact ties the gradient goes to
  # the first minimum only, as torch.min(dim) does.
  idx = jnp.argmin(combined, axis=-1)
  min_error = jnp.take_along_axis(combined, idx[..., None], axis=-1)[..., 0]
  return min_error, (idx >= num_identity).astype(jnp.float32)


def monodepth_loss(disps, color, pyramid, cam_T_cam, K, inv_K, rng, cfg):
  """monodepth2 ``generate_images_pred`` + ``compute_losses``.

  Draws the identity tie-breaking noise (``identity_noise``) and calls
  ``monodepth_loss_with_noise``; see there for the arguments and outputs.

  Args:
    disps, color, pyramid, cam_T_cam, K, inv_K, cfg: as
      ``monodepth_loss_with_noise``.
    rng: jax PRNG key for the ``identity_noise * normal`` tie-breaking noise
      (one draw per scale, as the reference); may be None when that noise
      is off (``identity_noise == 0`` or ``automask`` False).

  Returns:
    ``(loss, aux)`` of ``monodepth_loss_with_noise``.
  """
  noise = None
  if cfg.automask and cfg.identity_noise:
    if rng is None:
      raise ValueError(
          "monodepth_loss needs an rng for the identity tie-breaking noise "
          f"(cfg.identity_noise={cfg.identity_noise})")
    c = jnp.shape(color)
    if len(c) == 5:  # a wrong shape is reported by the loss itself
      noise = identity_noise(
          rng, (c[0], c[2], c[3], num_identity_channels(cfg)), cfg)
  return monodepth_loss_with_noise(disps, color, pyramid, cam_T_cam, K,
                                   inv_K, noise, cfg)


def monodepth_loss_with_noise(disps, color, pyramid, cam_T_cam, K, inv_K,
                              noise, cfg):
  """monodepth2's loss with a given tie-breaking noise.

  For every scale ``s``: ``disp_s`` is upsampled (bilinear, half-pixel) to
  full resolution and turned into depth; each source frame (scale 0,
  non-augmented) is warped into the centre view; the per-pixel minimum over
  [identity errors + noise, reprojection errors] is averaged
  (``min_reprojection``); the smoothness of the native-resolution
  ``disp_s`` against the centre image of that scale is added with weight
  ``smoothness_weight / 2**s``. The total is the mean over scales.

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
    noise: ``{s: [B, H, W, n]}`` noise added to the identity errors of
      scale ``s`` (``identity_noise`` draws it; ``n`` =
      ``num_identity_channels(cfg)``), or None for none. Ignored without
      ``automask``.
    cfg: ``sde_loss_config()``-like ConfigDict: ``min_depth``, ``max_depth``,
      ``scales``, ``frame_offsets``, ``ssim_weight``, ``smoothness_weight``,
      ``automask``, ``avg_reprojection`` (``identity_noise`` is read by the
      keyed form only).

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

  identity = None
  if automask:
    # Identical at every scale (scale-0 images); the noise is per scale.
    identity = reduce_frames(
        jnp.stack([pe(source_imgs[f]) for f in sources], axis=-1))
    if noise is not None:
      for s in scales:
        if s not in noise or tuple(jnp.shape(noise[s])) != identity.shape:
          raise ValueError(
              f"noise[{s}] must be {identity.shape} (the identity errors "
              f"of scale {s}); got "
              f"{jnp.shape(noise[s]) if s in noise else 'no entry'}")

  total = jnp.zeros((), jnp.float32)
  aux = {}
  for s in scales:
    disp = disps_f32[s]
    disp_full = warp.resize_bilinear_half_pixel(disp, (h, w))
    _, depth = transforms.disp_to_depth(
        disp_full, cfg.min_depth, cfg.max_depth)
    warped = {f: warp.inverse_warp(source_imgs[f], depth, cam_T_cam[f], K,
                                   inv_K)
              for f in sources}
    reprojection = reduce_frames(
        jnp.stack([pe(warped[f]) for f in sources], axis=-1))
    min_error, selected = min_reprojection(
        identity, reprojection,
        None if noise is None or not automask else noise[s])
    photo = jnp.mean(min_error)
    smooth = smoothness_lib.smoothness(disp, smooth_imgs[s])
    loss_s = photo + cfg.smoothness_weight * smooth / (2 ** s)
    total = total + loss_s
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
