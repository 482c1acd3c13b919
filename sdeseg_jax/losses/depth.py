"""Pseudo-depth regression loss (reverse Huber)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def berhu(pred, target, mask, apply_log: bool = False,
          threshold: float = 0.2):
  """Reverse Huber loss of the reference (its data-selection student).

  ``a = |target - pred| * mask``; ``c = threshold * max(a)`` over the whole
  batch, a constant (stop-gradient, the reference calls ``.item()``);
  ``loss = mean over ALL pixels of (a if a <= c else (a^2 + c^2) / (2c))``.
  Masked pixels have ``a = 0`` and still count in the mean.

  Args:
    pred: ``[B, H, W, ...]`` prediction (e.g. disparity).
    target: same shape, target (e.g. pseudo disparity).
    mask: broadcastable to ``pred``; 0 drops a pixel (but keeps it in the
      denominator).
    apply_log: compare ``log(1 + x)`` instead of ``x``.
    threshold: fraction of the maximum error where the quadratic part starts.

  Returns:
    Scalar float32 loss.
  """
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if pred.shape != target.shape:
    raise ValueError(f"berhu: pred {pred.shape} and target {target.shape} "
                     "must have the same shape")
  if apply_log:
    pred, target = jnp.log1p(pred), jnp.log1p(target)
  a = jnp.abs(target - pred) * jnp.asarray(mask, jnp.float32)
  c = jax.lax.stop_gradient(threshold * jnp.max(a))
  # If c == 0 every a is 0 and takes the linear branch; keep the other
  # branch finite so its gradient is not NaN.
  safe_c = jnp.where(c > 0, c, 1.0)
  quadratic = (a * a + c * c) / (2 * safe_c)
  return jnp.mean(jnp.where(a <= c, a, quadratic))
