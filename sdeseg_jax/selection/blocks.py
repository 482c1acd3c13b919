"""Pure building blocks of the automatic data selection (the fourth way).

Every function takes its inputs explicitly (features, disparity maps, the
already selected indices, the random permutation's seed), so each one can
be checked on hand-made or recorded inputs. What the reference
(``label_selection.py``, experiment 211) does:

* ``pool_features`` + ``zscore``: the SDE teacher's second decoder stage
  (``("upconv", 3)``), average-pooled to 4x8 (H x W, exact block means),
  z-scored per channel over all images and positions with the *unbiased*
  std (``torch.std_mean``), flattened.
* ``pairwise_distances``: the full N x N L2 matrix (``torch.cdist``, p=2),
  here computed on device one block of rows at a time so that large pools
  fit in memory.
* ``depth_uncertainty``: E(i) = mean over pixels of
  ``|log(1 + d_student) - log(1 + d_teacher)|`` with the low-disparity
  dilation mask and the bottom rows zeroed; ``masked=False`` gives the
  paper's plain per-pixel L1 (its Eq. 3, as a mean).
* ``farthest_point``: Eq. 4, iterative farthest-point picks on
  ``D' = D + lambda_E * E[j]`` (column j; E = 0 for selected images; zero
  diagonal), as one jitted O(N) update of the running minimum per pick, with
  the reference's early stop when the pick is already selected.
* ``top_n``: the greedy top-n of a score (US only, entropy baseline).
* ``reference_permutation``: ``np.random.RandomState(seed).permutation``,
  whose first element is the seed image (seed 42 -> 2403 of 2975).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.data.pipeline import reference_permutation
from sdeseg_jax.losses.segmentation import pixel_wise_entropy

__all__ = ["pool_features", "zscore", "pairwise_distances",
           "depth_uncertainty", "mean_entropy", "farthest_point", "top_n",
           "reference_permutation", "seed_image", "class_pixel_ratio"]


def pool_features(x: jax.Array, out_hw: Sequence[int] = (4, 8)) -> jax.Array:
  """``adaptive_avg_pool2d`` to ``out_hw`` for sizes that divide evenly.

  Args:
    x: ``[B, H, W, C]`` decoder features.
    out_hw: output (h, w); H and W must be multiples of them (the reference
      pools 64x128 to 4x8, i.e. exact 16x16 block means).

  Returns:
    ``[B, h, w, C]`` float32 block means.
  """
  b, h, w, c = x.shape
  oh, ow = out_hw
  if h % oh or w % ow:
    raise ValueError(f"pool_features: feature map {h}x{w} is not a multiple "
                     f"of the pooled size {oh}x{ow}; choose an image size "
                     "whose decoder stage divides evenly")
  x = jnp.asarray(x, jnp.float32).reshape(b, oh, h // oh, ow, w // ow, c)
  return x.mean(axis=(2, 4))


def zscore(pooled: jax.Array) -> jax.Array:
  """Per-channel z-score over images and positions (unbiased std), flat.

  Args:
    pooled: ``[N, h, w, C]`` pooled features of the whole pool.

  Returns:
    ``[N, h * w * C]`` float32.
  """
  x = jnp.asarray(pooled, jnp.float32)
  if x.shape[0] * x.shape[1] * x.shape[2] < 2:
    raise ValueError("zscore needs at least two feature vectors per channel")
  mean = x.mean(axis=(0, 1, 2))
  std = x.std(axis=(0, 1, 2), ddof=1)
  return ((x - mean) / std).reshape(x.shape[0], -1)


@jax.jit
def _distance_block(rows: jax.Array, x: jax.Array, x_sq: jax.Array
                    ) -> jax.Array:
  r_sq = jnp.sum(rows * rows, axis=1, keepdims=True)
  d2 = r_sq + x_sq[None, :] - 2.0 * jnp.dot(
      rows, x.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(d2, 0.0))


def pairwise_distances(x, block: int = 512) -> np.ndarray:
  """L2 distances between all rows, ``block`` rows at a time on device.

  Args:
    x: ``[N, D]`` features.
    block: rows per device computation (memory ~ ``block * N`` floats; the
      last block is padded so every block has one compiled shape).

  Returns:
    ``[N, N]`` float32 host array with a zero diagonal.
  """
  x = jnp.asarray(x, jnp.float32)
  n = x.shape[0]
  block = max(1, min(block, n))
  x_sq = jnp.sum(x * x, axis=1)
  out = np.empty((n, n), np.float32)
  for start in range(0, n, block):
    rows = x[start:start + block]
    m = rows.shape[0]
    if m < block:
      rows = jnp.pad(rows, ((0, block - m), (0, 0)))
    out[start:start + m] = np.asarray(_distance_block(rows, x, x_sq))[:m]
  np.fill_diagonal(out, 0.0)
  return out


def _dilate(mask: jax.Array, kernel: int) -> jax.Array:
  """``clamp(conv2d(mask, ones(k, k), padding=k // 2), 0, 1)`` of a 0/1 map:
  the max over each k x k window (outside pixels count as 0)."""
  return jax.lax.reduce_window(mask, 0.0, jax.lax.max, (1, kernel, kernel),
                               (1, 1, 1), "SAME")


@functools.partial(jax.jit, static_argnames=("masked", "kernel", "bottom_frac"))
def depth_uncertainty(student: jax.Array, teacher: jax.Array, *,
                      masked: bool = True, low_disp: float = 0.07,
                      kernel: int = 7, bottom_frac: float = 0.87
                      ) -> jax.Array:
  """E(i) of every image of a batch.

  ``e = |log(1 + student) - log(1 + teacher)|``; with ``masked`` (the
  reference) ``e`` is zeroed on the ``kernel`` x ``kernel`` dilation of the
  pixels with ``teacher < low_disp`` and on the rows from
  ``int(bottom_frac * H)`` on; ``E`` is the mean over all pixels (masked ones
  included). ``masked=False`` is the paper's plain L1.

  Args:
    student: ``[B, H, W]`` (or ``[B, H, W, 1]``) student disparity.
    teacher: same shape, the teacher's normalised pseudo disparity.
    masked: apply the reference's masks.
    low_disp: low-disparity threshold (0.07).
    kernel: dilation window (7: three pixels each side).
    bottom_frac: first masked row as a fraction of H (0.87: 445 of 512).

  Returns:
    ``[B]`` float32.
  """
  s = jnp.asarray(student, jnp.float32)
  t = jnp.asarray(teacher, jnp.float32)
  if s.shape != t.shape:
    raise ValueError(f"depth_uncertainty: student {s.shape} and teacher "
                     f"{t.shape} must have the same shape")
  if s.ndim == 4:
    s, t = s[..., 0], t[..., 0]
  e = jnp.abs(jnp.log1p(s) - jnp.log1p(t))
  if masked:
    low = _dilate((t < low_disp).astype(jnp.float32), kernel)
    e = e * (1.0 - low)
    rows = jnp.arange(e.shape[1]) < int(bottom_frac * e.shape[1])
    e = e * rows[None, :, None]
  return e.mean(axis=(1, 2))


@jax.jit
def mean_entropy(logits: jax.Array) -> jax.Array:
  """``[B, H, W, C]`` logits -> ``[B]`` mean pixel entropy in log2(C) units
  (the entropy baseline's score)."""
  return pixel_wise_entropy(logits).mean(axis=(1, 2))


@jax.jit
def _fps_add(min_dist: jax.Array, dist: jax.Array, bias: jax.Array,
             c: jax.Array) -> jax.Array:
  """Adds image ``c`` to the set: ``min(m, D'[c, :])`` with ``D'[c, c] = 0``."""
  row = jax.lax.dynamic_index_in_dim(dist, c, axis=0, keepdims=False) + bias
  row = row.at[c].set(0.0)
  return jnp.minimum(min_dist, row)


@jax.jit
def _fps_pick(min_dist: jax.Array) -> jax.Array:
  return jnp.argmax(min_dist)


def farthest_point(dist, selected: Sequence[int], n_add: int, bias=None,
                   lambda_e: float = 1000.0) -> list[int]:
  """Eq. 4: ``n_add`` picks ``j* = argmax_j min_{c in S} D'[c, j]``.

  ``D' = D + lambda_e * bias[j]`` on column j, with ``bias = 0`` for the
  images already in ``selected`` and a zero diagonal, so a selected image
  scores 0 and is only re-picked when nothing scores higher: then the
  reference stops early (fewer than ``n_add`` picks). Ties go to the lowest
  index (``argmax``). ``lambda_e = 0`` (or ``bias=None``) is pure diversity
  sampling.

  Args:
    dist: ``[N, N]`` distances (host or device).
    selected: the current set S (non-empty).
    n_add: number of images to add.
    bias: ``[N]`` uncertainty E, or None.
    lambda_e: weight of the uncertainty.

  Returns:
    The new indices in pick order.
  """
  dist = jnp.asarray(dist, jnp.float32)
  n = dist.shape[0]
  if not len(selected):
    raise ValueError("farthest_point needs a non-empty starting set")
  sel = [int(i) for i in selected]
  b = np.zeros(n, np.float32)
  if bias is not None and lambda_e:
    b = lambda_e * np.asarray(bias, np.float32)
  b[sel] = 0.0
  b = jnp.asarray(b)
  m = jnp.full((n,), jnp.inf, jnp.float32)
  for c in sel:
    m = _fps_add(m, dist, b, jnp.int32(c))
  chosen = set(sel)
  picks = []
  for _ in range(n_add):
    j = int(_fps_pick(m))
    if j in chosen:
      break  # the reference's early stop
    picks.append(j)
    chosen.add(j)
    m = _fps_add(m, dist, b, jnp.int32(j))
  return picks


def top_n(scores, selected: Sequence[int], n: int) -> list[int]:
  """The ``n`` highest-scoring images not in ``selected`` (greedy; ties go
  to the lowest index)."""
  s = np.asarray(scores, np.float64).copy()
  s[list(selected)] = -np.inf
  order = np.argsort(-s, kind="stable")
  out = [int(i) for i in order[:n] if np.isfinite(s[i])]
  return out


def seed_image(n_total: int, seed: int) -> int:
  """First element of the reference's seeded permutation (its seed image)."""
  return int(reference_permutation(n_total, seed)[0])


def class_pixel_ratio(class_counts, subset: Sequence[int]) -> np.ndarray:
  """Selected / pool pixels per class (the paper's Fig. 7).

  Args:
    class_counts: ``[N, C]`` labeled pixels of each class in each image.
    subset: selected image indices.

  Returns:
    ``[C]`` ratios (NaN for a class absent from the pool).
  """
  cc = np.asarray(class_counts, np.float64)
  total = cc.sum(axis=0)
  sel = cc[np.asarray(list(subset), np.int64)].sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, sel / np.where(total > 0, total, 1), np.nan)
