"""The one jitted training step that every mode uses.

A mode plugs in through a *task* object (see ``Task``); the step itself only
does what all modes share: per-step randomness, gradients, the optimiser
update, the optional mean-teacher update and a guard against non-finite
losses.

Mean teacher (``state.ema_params`` is not None): the task receives
``teacher=(ema_params, ema_batch_stats)``. After the update the teacher's
parameters become the EMA of the student's, and ``state.ema_batch_stats``
follows ``config.train.teacher_batch_stats`` (``mixing.teacher``): ``"own"``
(reference) stores the statistics the teacher's own train-mode forwards
produced in this step, which the task returns in its aux
(``TaskAux.teacher_batch_stats``); ``"ema"`` averages the student's;
``"student"`` copies them.

Sharding: the step is jitted over a 1-D ``("data",)`` mesh with the state
replicated and the batch split along its leading axis
(``sdeseg_jax.utils.sharding``). Written as plain per-batch code, XLA inserts
the gradient all-reduce, and ``flax.linen.BatchNorm`` statistics are computed
over the *global* batch, i.e. synchronised BatchNorm across devices (the
PyTorch reference used per-GPU BatchNorm on one GPU, which is the same thing
for its single-GPU runs).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from sdeseg_jax.mixing import teacher as teacher_lib
from sdeseg_jax.train.state import TrainState
from sdeseg_jax.utils import sharding as sharding_lib

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]


class TaskAux(NamedTuple):
  """What a task's ``loss_fn`` returns beside the loss.

  Attributes:
    batch_stats: the student's BatchNorm statistics after the step's
      train-mode forwards.
    metrics: scalars to log.
    teacher_batch_stats: the mean teacher's statistics after its own
      train-mode forwards of the step (its input statistics when it ran in
      inference mode), or None when the task did not run the teacher; the
      engine stores them under ``config.train.teacher_batch_stats="own"``
      and ignores them otherwise.
  """
  batch_stats: Any
  metrics: Metrics
  teacher_batch_stats: Any = None


class Task(Protocol):
  """What a training mode supplies to the shared engine.

  ``loss_fn`` is called inside ``jax.jit``/``jax.grad``; it must be pure.
  When the state carries a mean teacher, it is also given
  ``teacher=(ema_params, ema_batch_stats)`` (never differentiated).
  ``load_pretrained`` runs once on the host for a fresh run (not on
  resume); ``predict`` is the eval-mode forward the evaluators call.
  """

  def init(self, rng: jax.Array, batch: Batch) -> tuple[Any, Any]:
    """Returns ``(params, batch_stats)`` for a model fed ``batch``."""

  def load_pretrained(self, params, batch_stats) -> tuple[Any, Any]:
    """Host-side initial weights (``toolkit.load_initial_weights``):
    returns ``(params, batch_stats)`` as numpy trees."""

  def loss_fn(self, params, batch_stats, batch: Batch, rng: jax.Array,
              step: jax.Array, **kwargs) -> tuple[jax.Array, TaskAux]:
    """Returns ``(loss, TaskAux)``; metrics are scalars."""

  def predict(self, variables, batch: Batch) -> dict[str, jax.Array]:
    """Eval-mode outputs of ``batch`` (``color`` ``[B, T, H, W, 3]``):
    ``logits`` ``[B, H, W, C]``, ``disp`` ``[B, H, W, 1]``, ``cam_T_cam``
    ``{f: [B, 4, 4]}``, as the task has them."""


def train_step(state: TrainState, batch: Batch, *, task: Task,
               config: mlc.ConfigDict) -> tuple[TrainState, Metrics]:
  """One optimiser update.

  Args:
    state: the current state (donated by the jitted wrapper).
    batch: global batch dict (see docs/design.md), leading axis B.
    task: the mode's task object.
    config: the full config; reads ``config.train.ema_decay`` and
      ``config.train.teacher_batch_stats``.

  Returns:
    ``(new_state, metrics)``. ``metrics`` holds the task's scalars plus
    ``loss``, ``grad_norm`` and ``finite`` (1.0 iff loss and gradients are
    finite). A non-finite update is *not* applied: the returned state equals
    the input state, so no checkpoint can ever hold NaNs; the host loop stops
    on ``finite == 0``.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  kwargs = {}
  if state.ema_params is not None:
    kwargs["teacher"] = jax.lax.stop_gradient(
        (state.ema_params, state.ema_batch_stats))

  def loss_fn(params):
    return task.loss_fn(params, state.batch_stats, batch, rng, state.step,
                        **kwargs)

  (loss, aux), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  aux = TaskAux(*aux)
  new_batch_stats, metrics = aux.batch_stats, aux.metrics
  teacher_stats = (None if aux.teacher_batch_stats is None else
                   jax.lax.stop_gradient(aux.teacher_batch_stats))
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=state.step + 1, params=params,
                      batch_stats=new_batch_stats, opt_state=opt_state)
  if state.ema_params is not None:
    ema_params, ema_batch_stats = teacher_lib.update_teacher(
        new.step, state.ema_params, params, state.ema_batch_stats,
        new_batch_stats, max_decay=config.train.ema_decay,
        batch_stats_source=config.train.teacher_batch_stats,
        forward_batch_stats=teacher_stats)
    new = new.replace(ema_params=ema_params, ema_batch_stats=ema_batch_stats)
  # Keep the old state on a non-finite update (see Returns).
  new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
  metrics = dict(metrics)
  metrics.update(loss=loss, grad_norm=grad_norm,
                 finite=finite.astype(jnp.float32))
  return new, metrics


def state_sharding(state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Replicated NamedSharding for every leaf of ``state`` (or its shapes)."""
  repl = sharding_lib.replicated(mesh)
  return jax.tree.map(lambda _: repl, state)


def jit_train_step(task: Task, config: mlc.ConfigDict, mesh, state_shapes):
  """Returns ``step(state, batch) -> (state, metrics)`` jitted over ``mesh``.

  Args:
    task: the mode's task.
    config: full config.
    mesh: the ``("data",)`` mesh.
    state_shapes: the state or ``jax.eval_shape`` of it (gives the tree).

  Returns:
    The jitted function; the state argument is donated.
  """
  fn = functools.partial(train_step, task=task, config=config)
  st = state_sharding(state_shapes, mesh)
  return jax.jit(
      fn, donate_argnums=(0,),
      in_shardings=(st, sharding_lib.data_sharding(mesh)),
      out_shardings=(st, sharding_lib.replicated(mesh)))
