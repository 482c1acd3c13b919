"""Mean-teacher (EMA) updates, pure functions used inside the jitted step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def mean_teacher_decay(step: jax.Array, max_decay: float) -> jax.Array:
  """The reference's ramped EMA coefficient ``min(1 - 1/(t + 1), max_decay)``.

  Args:
    step: [] int, 1-based index of the optimiser update just applied (the
      reference increments ``step`` before the update, so the first call sees
      1 and gives 0.5).
    max_decay: upper bound (0.99 in the reference).

  Returns:
    [] float32 decay alpha.
  """
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(1.0 - 1.0 / (t + 1.0), jnp.float32(max_decay))


def ema_update(ema: Any, new: Any, decay: jax.Array | float) -> Any:
  """Returns ``decay * ema + (1 - decay) * new`` leaf by leaf.

  Args:
    ema: pytree of arrays (the teacher).
    new: pytree of the same structure (the student after its update).
    decay: scalar alpha in [0, 1].

  Returns:
    The updated teacher pytree, each leaf in the dtype of ``ema``.
  """
  def upd(e, n):
    return (decay * e + (1.0 - decay) * n).astype(e.dtype)
  return jax.tree.map(upd, ema, new)
