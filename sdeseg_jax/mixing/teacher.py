"""The mean teacher: its EMA update and its forward, as pure functions.

The reference averages only the *parameters* of the student into the teacher
after every optimiser step, with a warm-up decay

  alpha_t = min(1 - 1 / (t + 1), 0.99),   t = 1, 2, ... (1-based step),

so alpha = 0.5, 0.667, 0.75, ... and reaches 0.99 from step 99 on.

BatchNorm running statistics of the teacher (``BATCH_STATS_SOURCES``):

* ``"own"`` (reference): the teacher is a separate module whose buffers are
  never averaged; it runs in train mode to make pseudo labels, so each of
  its forwards (one per mixing branch) updates its *own* running statistics,
  and evaluating the teacher uses them. The caller passes
  the statistics its forwards produced in this step.
* ``"ema"``: the student's running statistics averaged with the same decay
  as the parameters (not in the reference; pairs with an inference-mode
  teacher).
* ``"student"``: a copy of the student's running statistics after the step.
"""

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

PyTree = Any
TEACHER_MODES = ("train", "eval")


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


BATCH_STATS_SOURCES = ("own", "ema", "student")


def update_teacher(
    step,
    ema_params: PyTree,
    params: PyTree,
    ema_batch_stats: Optional[PyTree] = None,
    batch_stats: Optional[PyTree] = None,
    *,
    batch_stats_source: str = "own",
    forward_batch_stats: Optional[PyTree] = None,
    max_decay: float = 0.99,
) -> Tuple[PyTree, Optional[PyTree]]:
  """One mean-teacher update after optimiser step `step` (1-based).

  Args:
    step: 1-based step index (int scalar, may be traced).
    ema_params: teacher parameters.
    params: student parameters after the optimiser step.
    ema_batch_stats: teacher BatchNorm statistics before the step (or None).
    batch_stats: student BatchNorm statistics after the step (or None).
    batch_stats_source: one of ``BATCH_STATS_SOURCES`` (module docstring).
    forward_batch_stats: ``"own"`` only: the teacher's statistics after its
      train-mode forwards of this step; None (the teacher did not run in
      train mode) keeps ``ema_batch_stats``.
    max_decay: upper bound of the decay.

  Returns:
    (new_ema_params, new_ema_batch_stats).

  Raises:
    ValueError: an unknown ``batch_stats_source``, or ``"ema"``/``"student"``
      without both statistics trees.
  """
  if batch_stats_source not in BATCH_STATS_SOURCES:
    raise ValueError(
        f"config.train.teacher_batch_stats={batch_stats_source!r}; choose "
        f"one of {BATCH_STATS_SOURCES}")
  decay = ema_decay(step, max_decay)
  new_params = ema_update(ema_params, params, decay)
  if batch_stats_source == "own":
    return new_params, (ema_batch_stats if forward_batch_stats is None
                        else forward_batch_stats)
  if ema_batch_stats is None or batch_stats is None:
    raise ValueError(
        f"update_teacher: teacher_batch_stats={batch_stats_source!r} needs "
        "both ema_batch_stats and batch_stats.")
  if batch_stats_source == "ema":
    return new_params, ema_update(ema_batch_stats, batch_stats, decay)
  return new_params, batch_stats  # "student"


def check_teacher_config(teacher_mode: str, teacher_batch_stats: str,
                         mode_key: str = "config.mix.teacher_mode") -> None:
  """Raises ValueError unless the teacher mode and statistics source fit.

  Args:
    teacher_mode: ``train`` or ``eval`` (read from ``mode_key``).
    teacher_batch_stats: ``config.train.teacher_batch_stats``, one of
      ``mixing.teacher.BATCH_STATS_SOURCES``.
    mode_key: the config key of ``teacher_mode``, for the message.
  """
  if teacher_mode not in TEACHER_MODES:
    raise ValueError(f"{mode_key}={teacher_mode!r}; choose one of "
                     f"{TEACHER_MODES}")
  if teacher_batch_stats not in BATCH_STATS_SOURCES:
    raise ValueError(
        f"config.train.teacher_batch_stats={teacher_batch_stats!r}; choose "
        f"one of {BATCH_STATS_SOURCES}")
  if teacher_mode == "eval" and teacher_batch_stats == "own":
    raise ValueError(
        f"{mode_key}='eval' runs the teacher on its running BatchNorm "
        "statistics, and an inference-mode teacher never updates its own: "
        "with config.train.teacher_batch_stats='own' they would stay at "
        "their initial values. Set config.train.teacher_batch_stats to "
        "'ema' (averaged student statistics) or 'student'")


def teacher_probs(model, teacher: tuple[Any, Any], images: jax.Array,
                  rng: jax.Array, mode: str) -> tuple[jax.Array, Any]:
  """Mean-teacher class probabilities of single frames (stop-gradient).

  Args:
    model: the flax segmentation net (``SegDepthNet``).
    teacher: ``(ema_params, ema_batch_stats)``.
    images: ``[B, H, W, 3]`` float in [0, 1].
    rng: dropout key (train mode).
    mode: ``"train"``: as the reference, BatchNorm normalises with the
      statistics of this batch and ASPP dropout is active; the teacher's
      running statistics take one momentum update from this batch (the
      reference's teacher is a module of its own in train mode).
      ``"eval"``: running statistics, no dropout, statistics unchanged.

  Returns:
    ``(probs, batch_stats)``: ``[B, H, W, C]`` float32 softmax and the
    teacher's BatchNorm statistics after this forward (the pose net's, which
    the teacher never runs, unchanged).
  """
  params, batch_stats = teacher
  variables = {"params": params, "batch_stats": batch_stats}
  x = images[:, None]
  if mode == "train":
    out, new = model.apply(variables, x, (0,), train=True, pose=False,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
    batch_stats = new["batch_stats"]
  elif mode == "eval":
    out = model.apply(variables, x, (0,), train=False, pose=False)
  else:
    raise ValueError(f"teacher mode must be one of {TEACHER_MODES}, got "
                     f"{mode!r}")
  probs = jax.nn.softmax(out["semantics"].astype(jnp.float32), axis=-1)
  return jax.lax.stop_gradient((probs, batch_stats))
