"""Depth scaling and rigid camera motion (monodepth2 conventions, fp32)."""

from __future__ import annotations

import jax.numpy as jnp


def disp_to_depth(disp, min_depth: float, max_depth: float):
  """Maps a sigmoid disparity to a depth in ``[min_depth, max_depth]``.

  ``scaled = 1/max + (1/min - 1/max) * disp`` and ``depth = 1 / scaled``
  (monodepth2's ``disp_to_depth``).

  Args:
    disp: ``[...]`` disparity in ``[0, 1]`` (any shape, e.g. [B, H, W, 1]).
    min_depth: depth reached at ``disp == 1``.
    max_depth: depth reached at ``disp == 0``.

  Returns:
    ``(scaled_disp, depth)``, both float32 with the shape of ``disp``.
  """
  if not 0 < min_depth < max_depth:
    raise ValueError(
        f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
  disp = jnp.asarray(disp, jnp.float32)
  min_disp = 1.0 / max_depth
  max_disp = 1.0 / min_depth
  scaled_disp = min_disp + (max_disp - min_disp) * disp
  return scaled_disp, 1.0 / scaled_disp


def _safe_norm(v, axis=-1, keepdims=False):
  """Euclidean norm whose gradient at 0 is 0 (as torch's), not NaN."""
  sq = jnp.sum(v * v, axis=axis, keepdims=keepdims)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def rot_from_axisangle(vec):
  """Rodrigues rotation as a homogeneous matrix.

  ``angle = |v|``, ``axis = v / (angle + 1e-7)`` exactly as monodepth2, so a
  zero vector gives the identity.

  Args:
    vec: ``[..., 3]`` axis-angle vectors (radians).

  Returns:
    ``[..., 4, 4]`` float32 rotation matrices (last row/column ``e_4``).
  """
  vec = jnp.asarray(vec, jnp.float32)
  if vec.shape[-1] != 3:
    raise ValueError(f"axis-angle must be [..., 3], got {vec.shape}")
  angle = _safe_norm(vec, keepdims=True)
  axis = vec / (angle + 1e-7)
  ca = jnp.cos(angle)[..., 0]
  sa = jnp.sin(angle)[..., 0]
  c = 1.0 - ca
  x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
  xs, ys, zs = x * sa, y * sa, z * sa
  xc, yc, zc = x * c, y * c, z * c
  xyc, yzc, zxc = x * yc, y * zc, z * xc
  zero = jnp.zeros_like(x)
  one = jnp.ones_like(x)
  rows = [
      [x * xc + ca, xyc - zs, zxc + ys, zero],
      [xyc + zs, y * yc + ca, yzc - xs, zero],
      [zxc - ys, yzc + xs, z * zc + ca, zero],
      [zero, zero, zero, one],
  ]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def translation_matrix(t):
  """Homogeneous translation.

  Args:
    t: ``[..., 3]`` translations.

  Returns:
    ``[..., 4, 4]`` float32 matrices ``[[I, t], [0, 1]]``.
  """
  t = jnp.asarray(t, jnp.float32)
  if t.shape[-1] != 3:
    raise ValueError(f"translation must be [..., 3], got {t.shape}")
  eye = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), t.shape[:-1] + (4, 4))
  return eye.at[..., :3, 3].set(t)


def _matmul(a, b):
  # Full fp32 even on accelerators whose default matmul precision is lower.
  return jnp.matmul(a, b, precision="highest")


def transformation_from_parameters(axisangle, translation, invert: bool):
  """Pose network output to a 4x4 camera transform (monodepth2).

  Without ``invert``: ``M = T(t) @ R``. With ``invert`` (used for negative
  frame offsets): ``M = R^T @ T(-t)``, which is exactly ``inv(T(t) @ R)``.

  Args:
    axisangle: ``[B, 3]`` rotation (axis-angle).
    translation: ``[B, 3]`` translation.
    invert: whether to return the inverse transform (static Python bool).

  Returns:
    ``[B, 4, 4]`` float32 ``cam_T_cam``.
  """
  rot = rot_from_axisangle(axisangle)
  t = jnp.asarray(translation, jnp.float32)
  if invert:
    rot = jnp.swapaxes(rot, -1, -2)
    t = -t
  tmat = translation_matrix(t)
  if invert:
    return _matmul(rot, tmat)
  return _matmul(tmat, rot)
