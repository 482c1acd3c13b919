"""Matching Geometry Sampling (MGS) criterion inside the step (the reference's
``matching_geometry_loader``).

For every target image the source candidate with the smallest geometric
difference is chosen:

  G(t, s) = mean_{all H·W pixels} |log(1 + 1/D_t) - log(1 + 1/D_s)| · r,

where r zeroes the top `round(80/512·H)` and bottom `round(100/512·H)` rows
(half-up rounding)
(sky and ego-car hood), which still count in the denominator (reference
behaviour; margins scaled linearly with the crop height, exactly
80/100 at 512).

Two criteria:

* `"paper"` (default, IJCV Eq. 22): 1/D is inverse depth, both domains on one
  scale. The inputs are raw SDE sigmoid disparities sigma of both domains
  (the same representation on both sides) and are mapped to inverse depth
  with monodepth2's `disp_to_depth`: 1/D = 1/max_depth +
  (1/min_depth - 1/max_depth)·sigma (min_depth 0.1, max_depth 100).
* `"reference"` (code parity): log(1 + d) of the values *as given*. In the
  reference the target values are per-image min-max normalised 8-bit
  pseudo-disparities and the source values raw 16-bit sigmoid outputs, so
  the two are on different scales; pass them unchanged to reproduce that.
"""

import math
from typing import Any, Tuple

import jax
import jax.numpy as jnp

PyTree = Any
CRITERIA = ("paper", "reference")


def crop_margins(height: int) -> Tuple[int, int]:
  """(top, bottom) rows excluded from G: 80 and 100 at a 512-row crop.

  Args:
    height: H.

  Returns:
    (top, bottom) ints.
  """
  # Half-up rounding (Python's round() would round 12.5 to even).
  return (int(math.floor(80 * height / 512 + 0.5)),
          int(math.floor(100 * height / 512 + 0.5)))


def _log_disp(disp, criterion, min_depth, max_depth):
  disp = disp.astype(jnp.float32)
  if criterion == "paper":
    inv_depth = 1.0 / max_depth + (1.0 / min_depth - 1.0 / max_depth) * disp
    return jnp.log1p(inv_depth)
  return jnp.log1p(disp)


def geometry_distance(
    target_disp: jax.Array,
    source_disp: jax.Array,
    criterion: str = "paper",
    min_depth: float = 0.1,
    max_depth: float = 100.0,
) -> jax.Array:
  """G for every (target, candidate) pair.

  Args:
    target_disp: [B, H, W] target disparity.
    source_disp: [B, K, H, W] disparities of K source candidates per target.
    criterion: "paper" or "reference" (module doc).
    min_depth: `disp_to_depth` minimum depth ("paper" only).
    max_depth: `disp_to_depth` maximum depth ("paper" only).

  Returns:
    float32 [B, K].
  """
  if criterion not in CRITERIA:
    raise ValueError(
        f"geometry_distance: criterion must be one of {CRITERIA}, got "
        f"{criterion!r}.")
  if (source_disp.ndim != 4 or target_disp.ndim != 3 or
      source_disp.shape[0] != target_disp.shape[0] or
      source_disp.shape[2:] != target_disp.shape[1:]):
    raise ValueError(
        f"geometry_distance: expected target [B, H, W] and source "
        f"[B, K, H, W], got {target_disp.shape} and {source_disp.shape}.")
  h = target_disp.shape[1]
  top, bottom = crop_margins(h)
  rows = jnp.arange(h)
  keep = ((rows >= top) & (rows < h - bottom)).astype(jnp.float32)
  lt = _log_disp(target_disp, criterion, min_depth, max_depth)[:, None]
  ls = _log_disp(source_disp, criterion, min_depth, max_depth)
  diff = jnp.abs(lt - ls) * keep[None, None, :, None]
  return jnp.mean(diff, axis=(2, 3))


def select_matching(
    target_disp: jax.Array,
    source_disp: jax.Array,
    candidates: PyTree,
    criterion: str = "paper",
    min_depth: float = 0.1,
    max_depth: float = 100.0,
) -> Tuple[PyTree, jax.Array, jax.Array]:
  """Picks per target the candidate with the smallest G and gathers it.

  Args:
    target_disp: [B, H, W].
    source_disp: [B, K, H, W].
    candidates: pytree of arrays [B, K, ...] (images, labels, disparities).
    criterion: "paper" or "reference".
    min_depth: see `geometry_distance`.
    max_depth: see `geometry_distance`.

  Returns:
    (chosen pytree of [B, ...], index int32 [B], distances float32 [B, K]).
    Ties go to the lowest candidate index (as `min` over a list would).
  """
  dist = geometry_distance(target_disp, source_disp, criterion, min_depth,
                           max_depth)
  idx = jnp.argmin(dist, axis=1).astype(jnp.int32)
  b, k = dist.shape

  def _gather(x):
    if x.shape[:2] != (b, k):
      raise ValueError(
          f"select_matching: every candidate array must be [B, K, ...] = "
          f"[{b}, {k}, ...], got {x.shape}.")
    ix = idx.reshape((b, 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, ix, axis=1)[:, 0]

  return jax.tree.map(_gather, candidates), idx, dist
