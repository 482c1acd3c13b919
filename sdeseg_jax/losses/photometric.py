"""SSIM and the monodepth2 photometric error (NHWC, fp32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_C1 = 0.01 ** 2
_C2 = 0.03 ** 2


def _pool3x3(x):
  """3x3 mean with stride 1 and 'valid' borders: [B,H+2,W+2,C]->[B,H,W,C]."""
  s = jax.lax.reduce_window(
      x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "VALID")
  return s / 9.0


def ssim(x, y):
  """Per-pixel SSIM *loss* map of monodepth2's ``SSIM`` layer.

  Reflection padding by 1 and a 3x3 mean pool give local statistics;
  ``loss = clamp((1 - SSIM) / 2, 0, 1)``, as in monodepth2.

  Args:
    x: ``[B, H, W, C]`` image.
    y: ``[B, H, W, C]`` image.

  Returns:
    ``[B, H, W, C]`` float32 loss map (0 where the images agree).
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.shape != y.shape or x.ndim != 4:
    raise ValueError(
        f"ssim needs two [B, H, W, C] images of equal shape, got {x.shape} "
        f"and {y.shape}")
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  x = jnp.pad(x, pad, mode="reflect")
  y = jnp.pad(y, pad, mode="reflect")
  mu_x = _pool3x3(x)
  mu_y = _pool3x3(y)
  sigma_x = _pool3x3(x * x) - mu_x * mu_x
  sigma_y = _pool3x3(y * y) - mu_y * mu_y
  sigma_xy = _pool3x3(x * y) - mu_x * mu_y
  n = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
  d = (mu_x * mu_x + mu_y * mu_y + _C1) * (sigma_x + sigma_y + _C2)
  return jnp.clip((1 - n / d) / 2, 0.0, 1.0)


def photometric_error(pred, target, ssim_weight: float = 0.85):
  """Reprojection error ``w * mean_c(SSIM) + (1 - w) * mean_c(|pred - t|)``.

  With ``ssim_weight == 0`` this is the pure L1 error (monodepth2
  ``no_ssim``), and SSIM is not computed.

  Args:
    pred: ``[B, H, W, C]`` predicted (warped) image.
    target: ``[B, H, W, C]`` target image.
    ssim_weight: weight of the SSIM term (0.85 in the reference).

  Returns:
    ``[B, H, W]`` float32 error map.
  """
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  l1 = jnp.mean(jnp.abs(target - pred), axis=-1)
  if ssim_weight == 0:
    return l1
  return (ssim_weight * jnp.mean(ssim(pred, target), axis=-1)
          + (1.0 - ssim_weight) * l1)
