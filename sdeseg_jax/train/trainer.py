"""The training loop shared by every mode.

``fit`` owns everything around the jitted step: the mesh, building the state
on device (shapes from ``jax.eval_shape``, nothing allocated on the host),
auto-resume from ``<workdir>/checkpoints``, logging to TensorBoard through
clu, periodic evaluation and image panels, checkpoints, preemption (SIGTERM)
and the stop on a non-finite loss.

Resume is exact: the state holds the run's PRNG key and the step folds the
step number into it, the grain iterator position is saved with every
checkpoint, and nothing else carries state between steps, so N uninterrupted
steps and k steps + restart + N-k steps give bitwise identical results on a
deterministic backend (CPU).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Iterator, Sequence

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax import errors
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import optim
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import state as state_lib
from sdeseg_jax.train.state import TrainState
from sdeseg_jax.utils import sharding as sharding_lib

EvalFn = Callable[[TrainState], dict[str, float]]
ImageFn = Callable[[TrainState], dict[str, np.ndarray]]


def itstime(step: int, every: int, total: int) -> bool:
  """True every ``every`` steps and at the last step; ``every <= 0``: never."""
  if every <= 0:
    return False
  return step % every == 0 or step == total


def to_global(batch: Any, mesh) -> Any:
  """Host numpy batch -> global sharded arrays; global arrays pass through."""
  leaves = jax.tree.leaves(batch)
  if leaves and all(isinstance(x, jax.Array) and
                    isinstance(x.sharding, jax.sharding.NamedSharding)
                    for x in leaves):
    return batch
  return sharding_lib.host_to_global(batch, mesh)


def abstract_batch(batch: Any) -> Any:
  """ShapeDtypeStructs of a (global) example batch."""
  def one(x):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
      x = np.asarray(x)
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
  return jax.tree.map(one, batch)


def create_state_fn(task: step_lib.Task, config: mlc.ConfigDict,
                    batch_shapes: Any) -> Callable[[], TrainState]:
  """Returns a function building the step-0 state (jit it with shardings)."""
  tx = optim.make_optimizer(config.optim)

  def create():
    rng = jax.random.PRNGKey(config.train.seed)
    init_rng, state_rng = jax.random.split(rng)
    batch = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_shapes)
    params, batch_stats = task.init(init_rng, batch)
    return TrainState.create(params=params, batch_stats=batch_stats, tx=tx,
                             rng=state_rng, use_ema=config.train.use_ema)
  return create


class PreemptionGuard:
  """Sets a flag on SIGTERM; the loop saves and exits after the step.

  Guards nest (a command running several trainings, e.g. the demo, holds
  one around all of them): they share one flag, so a SIGTERM that arrives
  between two runs or while one prepares its data stops the next run after
  its first step, and ``requested`` stays set until the outermost guard
  exits. Only the main thread can install the handler; elsewhere the guard
  only reads the flag.
  """

  _depth = 0
  _requested = False

  def __init__(self):
    self._old = None

  @property
  def requested(self) -> bool:
    return PreemptionGuard._requested

  def __enter__(self):
    if PreemptionGuard._depth == 0:
      PreemptionGuard._requested = False
      if threading.current_thread() is threading.main_thread():
        self._old = signal.signal(signal.SIGTERM, self._handle)
    PreemptionGuard._depth += 1
    return self

  @staticmethod
  def _handle(signum, frame):
    del signum, frame
    logging.warning("SIGTERM: finishing the step, saving, then exiting.")
    PreemptionGuard._requested = True

  def __exit__(self, *exc):
    PreemptionGuard._depth -= 1
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
    if PreemptionGuard._depth == 0:
      PreemptionGuard._requested = False


def _load_pretrained(task, state: TrainState) -> TrainState:
  """Applies ``task.load_pretrained`` (host-side weights) to a fresh state."""
  params, batch_stats = task.load_pretrained(
      jax.device_get(state.params), jax.device_get(state.batch_stats))
  put = lambda new, old: jax.tree.map(
      lambda n, o: jax.device_put(np.asarray(n, o.dtype), o.sharding),
      new, old)
  params = put(params, state.params)
  batch_stats = put(batch_stats, state.batch_stats)
  state = state.replace(params=params, batch_stats=batch_stats)
  if state.ema_params is not None:
    state = state.replace(ema_params=jax.tree.map(jnp.copy, params),
                          ema_batch_stats=jax.tree.map(jnp.copy, batch_stats))
  return state


def _check_finite(step: int, metrics: dict[str, Any], ckpt) -> None:
  m = jax.device_get(metrics)
  if float(m["finite"]) == 1.0:
    return
  ckpt.wait()
  last = ckpt.latest_step()
  raise errors.NonFiniteLossError(
      f"non-finite loss or gradient at step {step} (loss={float(m['loss'])}, "
      f"grad_norm={float(m['grad_norm'])}); training stopped and that update "
      f"was discarded. Last good checkpoint: "
      f"{'none yet' if last is None else f'step {last}'} in "
      f"{ckpt.directory}. Lower the learning rate or check the data.")


def _models(state: TrainState) -> dict[str, Any]:
  """``{"student"[, "teacher"]}`` variables (``state.models_to_evaluate``)."""
  return state_lib.models_to_evaluate(state)


def _run_evaluators(evaluators, state: TrainState, step: int
                    ) -> dict[str, float]:
  """Every evaluator's scalars as ``eval/<evaluator>/<model>/<metric>``."""
  out = {}
  for ev in evaluators:
    scalars = ev.evaluate(_models(state), step)
    out.update({f"eval/{ev.name}/{k}": v for k, v in scalars.items()})
    logging.info("step %d %s: %s", step, ev.name,
                 {k: round(v, 4) for k, v in scalars.items()
                  if k.endswith("/miou") or k.endswith("/abs_rel")})
  return out


def fit(config: mlc.ConfigDict, workdir: str, *, task: step_lib.Task,
        train_iter: Iterator[Any], example_batch: Any,
        mesh: jax.sharding.Mesh | None = None,
        eval_fn: EvalFn | None = None,
        image_fn: ImageFn | None = None,
        evaluators: Sequence[Any] = ()) -> TrainState:
  """Trains ``task`` for ``config.train.num_steps`` steps, resuming if possible.

  Args:
    config: full config (reads ``train``, ``optim``).
    workdir: output directory (checkpoints, TensorBoard events).
    task: the mode's task (``step.Task``).
    train_iter: iterator of per-process numpy batches (or global arrays). To
      be checkpointed it must be a grain ``DatasetIterator`` (anything with
      grain's ``get_state``/``set_state``); otherwise resume restores the
      state only and logs a warning.
    example_batch: a *global* batch or its ShapeDtypeStructs (shapes only;
      used to initialise parameters).
    mesh: the data mesh (default: all devices).
    eval_fn: ``state -> {name: scalar}``, run every ``eval_every`` steps.
    image_fn: ``state -> {name: [N, H, W, C] uint8}``, every ``image_every``.
    evaluators: ``eval.evaluators`` plug-ins, run every ``eval_every``
      steps on ``toolkit.models_to_evaluate(state)`` (scalars
      ``eval/<evaluator>/<model>/<metric>``) and asked for image panels
      every ``image_every`` steps; their state (best so far) is saved with
      every checkpoint and restored on resume.

  Returns:
    The final state (also on preemption, after the forced save).

  Raises:
    NonFiniteLossError: a non-finite loss or gradient (a
      ``FloatingPointError``); the update is not applied and no checkpoint is
      written after it.
    CheckpointError: the workdir's checkpoint is of another model or beyond
      ``num_steps``, or a checkpoint save failed (e.g. disk full).
  """
  tc = config.train
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  batch_shapes = abstract_batch(example_batch)
  create = create_state_fn(task, config, batch_shapes)
  shapes = jax.eval_shape(create)
  state_sh = step_lib.state_sharding(shapes, mesh)

  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=tc.max_to_keep)
  # A data Loader exposes its grain iterator as ``.iterator``.
  data_iter = getattr(train_iter, "iterator", train_iter)
  checkpointable = hasattr(data_iter, "get_state")
  latest = ckpt.latest_step()
  if latest is not None:
    ckpt.check_model(config)
    if latest > tc.num_steps:
      raise errors.CheckpointError(
          f"{ckpt.directory} holds checkpoint {latest}, beyond "
          f"config.train.num_steps={tc.num_steps}: the run is already past "
          f"its end. Set --config.train.num_steps={latest} or more to "
          "continue it, or use a new --workdir.")
    if not checkpointable:
      logging.warning("train_iter has no get_state: data order restarts.")
    state = ckpt.restore(
        None, ckpt_lib.abstract_like(shapes, sharding_lib.replicated(mesh)),
        data_iter if checkpointable else None)
    saved = ckpt.restore_eval_state() if evaluators else None
    for ev in evaluators:
      if saved and ev.name in saved:
        ev.set_state(saved[ev.name])
  else:
    state = jax.jit(create, out_shardings=state_sh)()
    if hasattr(task, "load_pretrained"):
      state = _load_pretrained(task, state)
  step = int(jax.device_get(state.step))
  logging.info("starting at step %d of %d", step, tc.num_steps)

  jstep = step_lib.jit_train_step(task, config, mesh, shapes)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  hooks = [periodic_actions.ReportProgress(num_train_steps=tc.num_steps,
                                           writer=writer)]
  if tc.profile and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=5))

  pending = None  # (step, metrics) of the previous step, checked lazily
  history = []
  with PreemptionGuard() as preempt:
    while step < tc.num_steps:
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = to_global(next(train_iter), mesh)
        state, metrics = jstep(state, batch)
      step += 1
      # Checking the previous step's metrics keeps dispatch asynchronous; a
      # bad update was not applied, so the lag cannot corrupt the state.
      if pending is not None:
        _check_finite(*pending, ckpt)
      pending = (step, metrics)
      ckpt.poll()  # a failed background save stops training here
      history.append(metrics)
      for hook in hooks:
        hook(step)
      if itstime(step, tc.log_every, tc.num_steps):
        _check_finite(*pending, ckpt)
        host = jax.device_get(history)
        scalars = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
        scalars.update({f"lr/{k}": v for k, v in
                        optim.learning_rates(config.optim, step - 1).items()})
        writer.write_scalars(step, scalars)
        history = []
      if itstime(step, tc.eval_every, tc.num_steps):
        if eval_fn is not None:
          writer.write_scalars(step, {f"eval/{k}": v
                                      for k, v in eval_fn(state).items()})
        if evaluators:
          writer.write_scalars(step, _run_evaluators(evaluators, state,
                                                     step))
      if itstime(step, tc.image_every, tc.num_steps):
        if image_fn is not None:
          writer.write_images(step, image_fn(state))
        for ev in evaluators:
          writer.write_images(step, {
              f"{ev.name}/{k}": v for k, v in ev.images(
                  _models(state), config.eval.num_images).items()})
      stop = preempt.requested or (jax.process_count() > 1 and
                                   ckpt.reached_preemption(step))
      if itstime(step, tc.checkpoint_every, tc.num_steps) or stop:
        _check_finite(*pending, ckpt)
        ckpt.save(step, state, data_iter if checkpointable else None,
                  config, eval_state=({ev.name: ev.get_state()
                                       for ev in evaluators}
                                      if evaluators else None))
      if stop:
        logging.warning("preempted: saved step %d, exiting.", step)
        break
  if pending is not None:
    _check_finite(*pending, ckpt)
  writer.flush()
  ckpt.wait()
  ckpt.close()
  return state
