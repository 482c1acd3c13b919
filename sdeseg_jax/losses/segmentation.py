"""Segmentation losses with the reference's ignore/denominator semantics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.constants import IGNORE_INDEX
from sdeseg_jax.geometry.warp import resize_bilinear_align_corners

__all__ = ["cross_entropy", "pixel_wise_entropy",
           "resize_bilinear_align_corners"]


def _check_label_range(labels, num_classes: int, ignore_index: int):
  """Eager-only check (skipped under jit) for labels torch would reject."""
  if isinstance(labels, jax.core.Tracer):
    return
  lab = np.asarray(labels)
  bad = (lab != ignore_index) & ((lab < 0) | (lab >= num_classes))
  if bad.any():
    raise ValueError(
        f"labels must be in [0, {num_classes}) or {ignore_index} (ignore); "
        f"found {np.unique(lab[bad])[:10].tolist()}")


def cross_entropy(logits, labels, ignore_index: int = IGNORE_INDEX,
                  pixel_weights=None):
  """Pixel-wise softmax cross-entropy as the reference ``cross_entropy2d``.

  If *both* spatial sizes of ``logits`` differ from the label size, the
  logits are first resized bilinearly with ``align_corners=True`` (if only
  one differs the reference fails; here it is a ValueError).

  * ``pixel_weights is None``: mean over non-ignored pixels. If every pixel
    is ignored the result is 0 (torch gives NaN, which would poison a
    jitted step on an unlabeled batch).
  * with ``pixel_weights``: ``mean over ALL B*H*W pixels of w * CE`` where
    ignored pixels contribute 0 but still count in the denominator
    (as in the reference's ``calc_pseudo_label_loss``).

  Labels outside ``[0, C)`` other than ``ignore_index`` raise when the
  labels are concrete; under jit they are the caller's responsibility (they
  are clipped into range).

  Args:
    logits: ``[B, h, w, C]`` unnormalised scores.
    labels: ``[B, H, W]`` integer class ids.
    ignore_index: label value excluded from the loss.
    pixel_weights: optional weights broadcastable to ``[B, H, W]`` (e.g. the
      scalar pseudo-label confidence ``q``); treated as constants.

  Returns:
    Scalar float32 loss.
  """
  logits = jnp.asarray(logits).astype(jnp.float32)
  labels = jnp.asarray(labels)
  if logits.ndim != 4 or labels.ndim != 3:
    raise ValueError(
        f"need logits [B, h, w, C] and labels [B, H, W], got {logits.shape} "
        f"and {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer, got {labels.dtype}")
  b, h, w, c = logits.shape
  height, width = labels.shape[1:]
  if labels.shape[0] != b:
    raise ValueError(f"batch mismatch: logits {logits.shape}, labels "
                     f"{labels.shape}")
  if h != height and w != width:
    logits = resize_bilinear_align_corners(logits, (height, width))
  elif (h, w) != (height, width):
    raise ValueError(
        f"logits {logits.shape} and labels {labels.shape} differ in only one "
        "spatial size; the reference resizes only when both differ")
  _check_label_range(labels, c, ignore_index)
  valid = labels != ignore_index
  safe = jnp.clip(jnp.where(valid, labels, 0), 0, c - 1).astype(jnp.int32)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
  nll = jnp.where(valid, nll, 0.0)
  if pixel_weights is None:
    count = jnp.sum(valid)
    return jnp.sum(nll) / jnp.maximum(count, 1).astype(jnp.float32)
  weights = jax.lax.stop_gradient(
      jnp.asarray(pixel_weights, jnp.float32))
  return jnp.mean(jnp.broadcast_to(weights, nll.shape) * nll)


def pixel_wise_entropy(logits, normalize: bool = False):
  """Per-pixel softmax entropy in units of ``log2(C)`` (the reference's
  ``pixel_wise_entropy``).

  ``-sum_c p log2(p + 1e-30) / log2(C)``; with ``normalize`` the map is
  then min-max scaled over the whole batch, as the reference.

  Args:
    logits: ``[B, H, W, C]`` scores.
    normalize: min-max scale the result to ``[0, 1]``.

  Returns:
    ``[B, H, W]`` float32 entropy (1 for a uniform distribution).
  """
  logits = jnp.asarray(logits).astype(jnp.float32)
  c = logits.shape[-1]
  p = jax.nn.softmax(logits, axis=-1)
  ent = -jnp.sum(p * jnp.log2(p + 1e-30), axis=-1) / np.log2(c)
  if normalize:
    lo, hi = jnp.min(ent), jnp.max(ent)
    ent = (ent - lo) / (hi - lo)
  return ent
