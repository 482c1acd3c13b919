"""Mean-teacher (EMA) update as pure functions (REFERENCE_SPEC §4.4).

The reference averages only the *parameters* of the student into the teacher
after every optimiser step, with a warm-up decay

  alpha_t = min(1 - 1 / (t + 1), 0.99),   t = 1, 2, ... (1-based step),

so alpha = 0.5, 0.667, 0.75, ... and reaches 0.99 from step 99 on. BatchNorm
running statistics are *not* averaged (the teacher runs in train mode and its
own running stats are never used). `update_teacher` keeps that default and
offers averaging the batch statistics as an option.
"""

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

PyTree = Any


def ema_decay(step, max_decay: float = 0.99) -> jax.Array:
  """EMA decay alpha_t = min(1 - 1/(t+1), max_decay).

  Args:
    step: 1-based index of the optimiser step that was just taken (the
      reference's `i` after `optimizer.step()`); int scalar, may be traced.
    max_decay: upper bound of the decay (0.99 in the reference).

  Returns:
    float32 scalar decay.
  """
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(1.0 - 1.0 / (t + 1.0), max_decay)


def ema_update(ema_tree: PyTree, new_tree: PyTree, decay) -> PyTree:
  """Returns decay * ema + (1 - decay) * new, leaf by leaf.

  Args:
    ema_tree: the teacher pytree (float leaves).
    new_tree: the student pytree with the same structure and shapes.
    decay: float scalar (e.g. `ema_decay(step)`).

  Returns:
    A pytree like `ema_tree`, each leaf in its own dtype.
  """
  def _one(e, n):
    d = jnp.asarray(decay, jnp.float32)
    out = d * e.astype(jnp.float32) + (1.0 - d) * n.astype(jnp.float32)
    return out.astype(e.dtype)
  return jax.tree.map(_one, ema_tree, new_tree)


def update_teacher(
    step,
    ema_params: PyTree,
    params: PyTree,
    ema_batch_stats: Optional[PyTree] = None,
    batch_stats: Optional[PyTree] = None,
    *,
    average_batch_stats: bool = False,
    max_decay: float = 0.99,
) -> Tuple[PyTree, Optional[PyTree]]:
  """One mean-teacher update after optimiser step `step` (1-based).

  Args:
    step: 1-based step index (int scalar, may be traced).
    ema_params: teacher parameters.
    params: student parameters after the optimiser step.
    ema_batch_stats: teacher BatchNorm statistics (or None).
    batch_stats: student BatchNorm statistics (or None).
    average_batch_stats: if False (reference, §4.4), the teacher's batch
      statistics are returned unchanged; if True they are averaged like the
      parameters.
    max_decay: upper bound of the decay.

  Returns:
    (new_ema_params, new_ema_batch_stats).
  """
  decay = ema_decay(step, max_decay)
  new_params = ema_update(ema_params, params, decay)
  if average_batch_stats:
    if ema_batch_stats is None or batch_stats is None:
      raise ValueError(
          "update_teacher: average_batch_stats=True needs both "
          "ema_batch_stats and batch_stats.")
    return new_params, ema_update(ema_batch_stats, batch_stats, decay)
  return new_params, ema_batch_stats
