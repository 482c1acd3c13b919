"""ImageNet feature-distance regulariser (``torch.dist`` of the encoder
features in the reference's SDE stage 2)."""

from __future__ import annotations

import jax.numpy as jnp


def feature_distance(a, b):
  """``torch.dist(a, b, p=2)``: Euclidean norm of ``a - b`` over everything.

  Neither squared nor averaged, so it grows with batch size and resolution
  (as in the reference). The gradient at ``a == b`` is 0, as in torch
  (a plain ``sqrt`` would give NaN there).

  Args:
    a: ``[B, h, w, C]`` features of the trained encoder.
    b: same shape, features of the frozen ImageNet encoder (the caller
      applies stop_gradient).

  Returns:
    Scalar float32 distance.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"feature_distance: shapes {a.shape} and {b.shape} "
                     "differ")
  diff = a - b
  sq = jnp.sum(diff * diff)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
