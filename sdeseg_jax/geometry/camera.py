"""Pinhole intrinsics as 4x4 matrices, usable on numpy and jax arrays.

The data pipeline builds ``K`` on the host with numpy; the jitted step scales
it per pyramid level with jnp. Every function here therefore dispatches on
the type of its input: numpy in, numpy out; jax in, jax out. Matrices are
``[..., 4, 4]`` float32 in *pixels*, laid out as in monodepth2::

  [[fx, 0, cx, 0],
   [0, fy, cy, 0],
   [0,  0,  1, 0],
   [0,  0,  0, 1]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*arrays):
  """Returns jnp if any argument is a jax array (or tracer), else numpy."""
  for a in arrays:
    if isinstance(a, jax.Array):
      return jnp
  return np


def _check_4x4(K, name="K"):
  if K.shape[-2:] != (4, 4):
    raise ValueError(
        f"{name} must have shape [..., 4, 4], got {tuple(K.shape)}")


def intrinsics_matrix(fx, fy, cx, cy):
  """Builds ``K`` from focal lengths and principal point (pixels).

  Args:
    fx, fy, cx, cy: scalars or arrays of a common broadcast shape ``[...]``.

  Returns:
    ``[..., 4, 4]`` float32 intrinsics (numpy unless an input is a jax array).
  """
  xp = _xp(fx, fy, cx, cy)
  fx, fy, cx, cy = xp.broadcast_arrays(
      *(xp.asarray(v, dtype=xp.float32) for v in (fx, fy, cx, cy)))
  zero = xp.zeros_like(fx)
  one = xp.ones_like(fx)
  rows = [
      [fx, zero, cx, zero],
      [zero, fy, cy, zero],
      [zero, zero, one, zero],
      [zero, zero, zero, one],
  ]
  return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def scale_intrinsics(K, scale: int):
  """Intrinsics of pyramid level ``scale``: rows 0 and 1 divided by 2**scale.

  This is the reference's (ssda branch) convention: the principal
  point is divided too, without a half-pixel correction.

  Args:
    K: ``[..., 4, 4]`` intrinsics at scale 0.
    scale: non-negative pyramid level.

  Returns:
    ``[..., 4, 4]`` float32 intrinsics at that level.
  """
  if scale < 0:
    raise ValueError(f"scale must be >= 0, got {scale}")
  xp = _xp(K)
  K = xp.asarray(K, dtype=xp.float32)
  _check_4x4(K)
  f = 1.0 / (2 ** scale)
  factor = xp.asarray([[f], [f], [1.0], [1.0]], dtype=xp.float32)
  return K * factor


def crop_intrinsics(K, x1, y1):
  """Intrinsics after cropping the image at top-left corner ``(x1, y1)``.

  Args:
    K: ``[..., 4, 4]`` intrinsics of the uncropped image.
    x1, y1: crop offsets in pixels (scalars or ``[...]`` arrays).

  Returns:
    ``[..., 4, 4]`` float32: ``cx - x1``, ``cy - y1``, the rest unchanged.
  """
  xp = _xp(K, x1, y1)
  K = xp.asarray(K, dtype=xp.float32)
  _check_4x4(K)
  x1 = xp.asarray(x1, dtype=xp.float32)
  y1 = xp.asarray(y1, dtype=xp.float32)
  zeros = xp.zeros_like(x1)
  # Offsets only touch column 2 of rows 0 and 1.
  col = xp.stack([x1, y1, zeros, zeros], axis=-1)[..., :, None]
  mask = xp.asarray([0.0, 0.0, 1.0, 0.0], dtype=xp.float32)
  return K - col * mask


def flip_intrinsics(K, width, height=None):
  """Intrinsics after a horizontal flip of an image ``width`` pixels wide.

  Follows the reference: ``cx -> width - cx`` (in normalised units the
  reference does ``u0 -> 1 - u0``). Passing ``height`` additionally maps
  ``cy -> height - cy``, which reproduces the master branch's vertical
  principal-point flip [BUG][PARITY]; leave it None for
  correct geometry.

  Args:
    K: ``[..., 4, 4]`` intrinsics.
    width: image width in pixels (scalar).
    height: optional image height in pixels (scalar), see above.

  Returns:
    ``[..., 4, 4]`` float32 flipped intrinsics.
  """
  xp = _xp(K)
  K = xp.asarray(K, dtype=xp.float32)
  _check_4x4(K)
  # new = offset - old on the flipped entries; identity elsewhere.
  sign = np.ones((4, 4), np.float32)
  offset = np.zeros((4, 4), np.float32)
  sign[0, 2] = -1.0
  offset[0, 2] = width
  if height is not None:
    sign[1, 2] = -1.0
    offset[1, 2] = height
  return K * xp.asarray(sign) + xp.asarray(offset)


def invert_intrinsics(K):
  """Returns ``inv_K`` (``[..., 4, 4]`` float32) for intrinsics ``K``.

  The reference uses ``np.linalg.pinv``; for a valid (invertible) ``K`` the
  pseudo-inverse equals the inverse.
  """
  xp = _xp(K)
  K = xp.asarray(K, dtype=xp.float32)
  _check_4x4(K)
  if xp is np:
    # Invert in float64 on the host so the host path is as exact as pinv.
    return np.linalg.inv(K.astype(np.float64)).astype(np.float32)
  return jnp.linalg.inv(K)
