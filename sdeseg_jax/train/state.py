"""The training state shared by every mode (SDE, SSL, SSDA, selection).

One ``TrainState`` pytree holds everything a step reads and writes, so that the
jitted step can donate it and a checkpoint of it (plus the data-iterator state)
is all that is needed to continue a run bit for bit.
"""

from __future__ import annotations

from typing import Any

from flax import struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Parameters, optimiser state and bookkeeping of one training run.

  Attributes:
    step: [] int32, number of optimiser updates applied so far.
    params: the trainable flax parameters (``variables["params"]``).
    batch_stats: BatchNorm running statistics (``variables["batch_stats"]``);
      an empty dict for models without BatchNorm.
    opt_state: the optax state of ``tx``.
    rng: [2] uint32 raw PRNG key of the run; the step uses
      ``fold_in(rng, step)`` so that resuming reproduces the same randomness.
    tx: the optax transformation (static, not saved in checkpoints).
    ema_params: exponential moving average of ``params`` (mean teacher), or
      None when the mode has no teacher.
    ema_batch_stats: the teacher's BatchNorm running statistics (used when
      the teacher is evaluated or runs in inference mode), or None. What
      they track is ``config.train.teacher_batch_stats``: the teacher's own
      train-mode forwards (``own``, the reference), the EMA of the
      student's (``ema``) or a copy of the student's (``student``); see
      ``sdeseg_jax.mixing.teacher`` and ``train/step.py``.
  """

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  ema_params: PyTree = None
  ema_batch_stats: PyTree = None

  @classmethod
  def create(cls, *, params: PyTree, batch_stats: PyTree,
             tx: optax.GradientTransformation, rng: jax.Array,
             use_ema: bool = False) -> "TrainState":
    """Builds the state at step 0.

    Args:
      params: initial parameters.
      batch_stats: initial BatchNorm statistics (``{}`` if none).
      tx: the optimiser.
      rng: [2] uint32 raw PRNG key.
      use_ema: whether to keep a mean-teacher copy of params/batch_stats
        (initialised as a copy of the student, as the reference does).

    Returns:
      The state.
    """
    copy = lambda t: jax.tree.map(jnp.array, t)
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=jnp.asarray(rng, jnp.uint32),
        tx=tx,
        ema_params=copy(params) if use_ema else None,
        ema_batch_stats=copy(batch_stats) if use_ema else None)


def models_to_evaluate(state) -> dict[str, Any]:
  """``{"student": variables[, "teacher": variables]}`` of a train state.

  The teacher uses ``state.ema_batch_stats``: the running statistics of
  ``config.train.teacher_batch_stats`` (its own, the averaged or the copied
  student statistics).
  """
  models = {"student": {"params": state.params,
                        "batch_stats": state.batch_stats}}
  if state.ema_params is not None:
    models["teacher"] = {"params": state.ema_params,
                         "batch_stats": state.ema_batch_stats}
  return models
