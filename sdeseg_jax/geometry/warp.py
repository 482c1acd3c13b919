"""Back-projection, projection and differentiable bilinear sampling (NHWC).

Pure jnp, float32, jit-friendly. Pixel coordinates follow the reference:
``u`` is the column (x) index and ``v`` the row (y) index, both starting at
0 at the *centre* of the top-left pixel (``align_corners=True`` semantics).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _batched_4x4(m, batch: int, name: str):
  """Broadcasts ``[4, 4]`` or ``[B, 4, 4]`` to ``[B, 4, 4]`` float32."""
  m = jnp.asarray(m, jnp.float32)
  if m.shape[-2:] != (4, 4) or m.ndim not in (2, 3):
    raise ValueError(f"{name} must be [4, 4] or [B, 4, 4], got {m.shape}")
  return jnp.broadcast_to(m, (batch, 4, 4))


def pixel_grid(height: int, width: int):
  """``[H, W, 3]`` float32 homogeneous pixel coordinates ``(u, v, 1)``."""
  v, u = jnp.meshgrid(
      jnp.arange(height, dtype=jnp.float32),
      jnp.arange(width, dtype=jnp.float32),
      indexing="ij")
  return jnp.stack([u, v, jnp.ones_like(u)], axis=-1)


def backproject(depth, inv_K):
  """Lifts every pixel to a homogeneous camera-space point.

  ``cam = depth * (inv_K[:3, :3] @ [u, v, 1])`` with a 1 appended
  (monodepth2 ``BackprojectDepth``).

  Args:
    depth: ``[B, H, W, 1]`` depth.
    inv_K: ``[B, 4, 4]`` (or ``[4, 4]``) inverse intrinsics.

  Returns:
    ``[B, H, W, 4]`` float32 homogeneous points.
  """
  depth = jnp.asarray(depth, jnp.float32)
  if depth.ndim != 4 or depth.shape[-1] != 1:
    raise ValueError(f"depth must be [B, H, W, 1], got {depth.shape}")
  b, h, w, _ = depth.shape
  inv_K = _batched_4x4(inv_K, b, "inv_K")
  rays = jnp.einsum(
      "bij,hwj->bhwi", inv_K[:, :3, :3], pixel_grid(h, w), precision=_HIGHEST)
  cam = depth * rays
  return jnp.concatenate([cam, jnp.ones_like(depth)], axis=-1)


def project(points, K, T):
  """Projects homogeneous points with ``(K @ T)[:3]`` to pixel coordinates.

  ``pix = p[:2] / (p[2] + 1e-7)`` as monodepth2 ``Project3D``, but returned in
  pixels instead of the ``[-1, 1]`` grid (``bilinear_sample`` takes pixels).

  Args:
    points: ``[B, H, W, 4]`` homogeneous camera points.
    K: ``[B, 4, 4]`` (or ``[4, 4]``) intrinsics.
    T: ``[B, 4, 4]`` (or ``[4, 4]``) transform applied before ``K``.

  Returns:
    ``[B, H, W, 2]`` float32 ``(u, v)`` pixel coordinates.
  """
  points = jnp.asarray(points, jnp.float32)
  if points.ndim != 4 or points.shape[-1] != 4:
    raise ValueError(f"points must be [B, H, W, 4], got {points.shape}")
  b = points.shape[0]
  K = _batched_4x4(K, b, "K")
  T = _batched_4x4(T, b, "T")
  proj = jnp.matmul(K, T, precision=_HIGHEST)[:, :3, :]
  cam = jnp.einsum("bij,bhwj->bhwi", proj, points, precision=_HIGHEST)
  return cam[..., :2] / (cam[..., 2:3] + 1e-7)


def _clamp_like_torch(x, hi: float):
  """Clamps to ``[0, hi]``; the gradient is 1 strictly inside, else 0.

  torch's border padding (``clip_coordinates_set_grad``) zeroes the
  coordinate gradient at and beyond the borders, which ``jnp.clip`` does not
  do exactly at the bound.
  """
  inside = (x > 0) & (x < hi)
  return jnp.where(inside, x, jax.lax.stop_gradient(jnp.clip(x, 0.0, hi)))


def bilinear_sample(img, pix):
  """Samples ``img`` at pixel coordinates, bilinear with border padding.

  Equivalent to torch ``grid_sample(mode="bilinear", padding_mode="border",
  align_corners=True)`` with the grid expressed in pixels: coordinates are
  clamped to ``[0, W-1] x [0, H-1]``, then the four neighbours are gathered.
  Differentiable w.r.t. both ``img`` and ``pix``.

  Args:
    img: ``[B, H, W, C]`` source image.
    pix: ``[B, Ho, Wo, 2]`` ``(x, y)`` pixel coordinates to sample at.

  Returns:
    ``[B, Ho, Wo, C]`` float32 samples.
  """
  img = jnp.asarray(img, jnp.float32)
  pix = jnp.asarray(pix, jnp.float32)
  if img.ndim != 4:
    raise ValueError(f"img must be [B, H, W, C], got {img.shape}")
  if pix.ndim != 4 or pix.shape[-1] != 2 or pix.shape[0] != img.shape[0]:
    raise ValueError(
        f"pix must be [B, Ho, Wo, 2] with B={img.shape[0]}, got {pix.shape}")
  b, h, w, c = img.shape
  _, ho, wo, _ = pix.shape
  x = _clamp_like_torch(pix[..., 0], float(w - 1))
  y = _clamp_like_torch(pix[..., 1], float(h - 1))
  # floor() has zero gradient, so d/dx flows through the weights only, the
  # same piecewise-linear derivative torch computes.
  x0f = jax.lax.stop_gradient(jnp.floor(x))
  y0f = jax.lax.stop_gradient(jnp.floor(y))
  wx = (x - x0f)[..., None]
  wy = (y - y0f)[..., None]
  x0 = x0f.astype(jnp.int32)
  y0 = y0f.astype(jnp.int32)
  # At the last column/row the +1 neighbour has weight 0; clamping its index
  # keeps the gather in bounds without changing the result.
  x1 = jnp.minimum(x0 + 1, w - 1)
  y1 = jnp.minimum(y0 + 1, h - 1)
  flat = img.reshape(b, h * w, c)

  def gather(yi, xi):
    idx = (yi * w + xi).reshape(b, ho * wo, 1)
    return jnp.take_along_axis(flat, idx, axis=1).reshape(b, ho, wo, c)

  top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
  bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
  return top * (1.0 - wy) + bottom * wy


def inverse_warp(src, depth, T, K, inv_K):
  """Synthesises the target view from ``src`` (monodepth2's backproject,
  project and ``grid_sample``).

  Each target pixel is back-projected with its ``depth``, moved by ``T``
  (target camera -> source camera) and projected into ``src``, which is
  sampled bilinearly with border padding.

  Args:
    src: ``[B, H, W, C]`` source image.
    depth: ``[B, H, W, 1]`` target-view depth.
    T: ``[B, 4, 4]`` ``cam_T_cam`` from target to source.
    K: ``[B, 4, 4]`` (or ``[4, 4]``) intrinsics of this resolution.
    inv_K: ``[B, 4, 4]`` (or ``[4, 4]``) their inverse.

  Returns:
    ``[B, H, W, C]`` float32 warped image.
  """
  pix = project(backproject(depth, inv_K), K, T)
  return bilinear_sample(src, pix)


def _align_corners_axis(x, out_size: int, axis: int):
  """Linear resampling of one axis with ``align_corners=True`` coordinates."""
  in_size = x.shape[axis]
  if out_size == in_size:
    return x
  # torch: scale = (in - 1) / (out - 1), or 0 for a single output sample.
  scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
  src = jnp.arange(out_size, dtype=jnp.float32) * jnp.float32(scale)
  i0 = jnp.floor(src).astype(jnp.int32)
  i0 = jnp.minimum(i0, in_size - 1)
  i1 = jnp.minimum(i0 + 1, in_size - 1)
  frac = src - i0.astype(jnp.float32)
  shape = [1] * x.ndim
  shape[axis] = out_size
  frac = frac.reshape(shape)
  return (jnp.take(x, i0, axis=axis) * (1.0 - frac)
          + jnp.take(x, i1, axis=axis) * frac)


def resize_bilinear_align_corners(x, size: Sequence[int]):
  """Bilinear resize with torch ``interpolate(align_corners=True)`` semantics.

  Separable, gather based, no antialiasing (as torch), so it is exact for up-
  and downsampling alike. Used by the segmentation loss and evaluation.

  Args:
    x: ``[B, h, w, C]`` array.
    size: ``(H, W)`` output size.

  Returns:
    ``[B, H, W, C]`` float32.
  """
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 4:
    raise ValueError(f"x must be [B, h, w, C], got {x.shape}")
  height, width = (int(s) for s in size)
  x = _align_corners_axis(x, height, axis=1)
  return _align_corners_axis(x, width, axis=2)


def resize_bilinear_half_pixel(x, size: Sequence[int]):
  """Bilinear *up*sampling as torch ``interpolate(align_corners=False)``.

  ``jax.image.resize(method="bilinear")`` uses half-pixel centres and, when
  upsampling, renormalises the border taps, which equals torch's clamping of
  the source index. It antialiases when downsampling (torch does not), so
  downsampling is refused.

  Args:
    x: ``[B, h, w, C]`` array.
    size: ``(H, W)`` output size with ``H >= h`` and ``W >= w``.

  Returns:
    ``[B, H, W, C]`` float32.
  """
  x = jnp.asarray(x, jnp.float32)
  height, width = (int(s) for s in size)
  if x.ndim != 4 or height < x.shape[1] or width < x.shape[2]:
    raise ValueError(
        f"expected [B, h, w, C] with h <= {height}, w <= {width}, "
        f"got {x.shape}")
  if (height, width) == x.shape[1:3]:
    return x
  return jax.image.resize(
      x, (x.shape[0], height, width, x.shape[3]), method="bilinear")
