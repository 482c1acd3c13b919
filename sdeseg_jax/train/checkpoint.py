"""Orbax checkpoints of the train state, the data iterator and the config.

Layout: ``<workdir>/checkpoints/<step>/{state,data_iter,config}``. Every
checkpoint holds

* ``state``: the ``TrainState`` pytree (``tx`` is static and rebuilt from the
  config), restored onto the mesh through an abstract target of
  ``jax.ShapeDtypeStruct``s with shardings, so that optax NamedTuples come back
  as NamedTuples and arrays land replicated without a host round trip;
* ``data_iter``: the grain iterator state (one small JSON per process), so a
  resumed run sees exactly the batches an uninterrupted one would;
* ``config``: the run's config as JSON, for humans and for ``export_depth``;
* ``eval_state`` (when the run has evaluators): their JSON state, e.g. the
  best mIoU so far, so that a resumed run keeps it.

Saves are asynchronous; ``wait()`` blocks until the last one is on disk and
``poll()`` (called after every training step) raises as soon as a finished
background save failed: "no space left on device at <path>", with orbax's
partial temporary folder removed. A checkpoint directory only appears under
its final name once complete (orbax writes to a temporary name and renames),
so a crash never leaves a half-written "latest" checkpoint.

Resuming checks before orbax reads anything that the saved config's
``model`` section matches the new one (``check_model``) and that the saved
state has the leaf shapes of the new one. A latest checkpoint that is
unreadable all the same (a truncated or corrupt file) is moved aside to
``<workdir>/checkpoints_corrupt/<step>`` (never deleted) and the newest intact
one is used, with a warning naming what was skipped and why.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import threading
import time
from typing import Any

from absl import logging
import grain
import jax
import ml_collections as mlc
import orbax.checkpoint as ocp

from sdeseg_jax import errors


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def corrupt_dir(workdir: str) -> str:
  """Where unreadable checkpoints are moved (never deleted)."""
  return checkpoint_dir(workdir) + "_corrupt"


def saved_config(directory: str, step: int) -> dict[str, Any] | None:
  """The config JSON saved with checkpoint ``step`` (None if unreadable).

  Read as a plain file, without orbax, so that it works on any checkpoint.
  """
  path = os.path.join(directory, str(step), "config", "metadata")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def model_differences(saved: dict[str, Any], config: mlc.ConfigDict
                      ) -> list[str]:
  """``config.model`` keys whose value differs from the saved config's.

  Keys present on one side only (added or dropped by a code change) are not
  compared.

  Args:
    saved: the saved config dict (``saved_config``).
    config: the new run's config.

  Returns:
    ``["config.model.width: 16 saved, 8 now", ...]``; empty if they match.
  """
  new = json.loads(config.to_json_best_effort())
  a = _flat(saved.get("model") or {})
  b = _flat(new.get("model") or {})
  return [f"config.model.{k}: {a[k]!r} saved, {b[k]!r} now"
          for k in sorted(set(a) & set(b)) if a[k] != b[k]]


def _shape_signature(tree: Any) -> list[tuple[tuple[int, ...], str]]:
  return sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def _find_oserror(exc: BaseException | None) -> OSError | None:
  """The first ``OSError`` in ``exc``'s cause/context chain or group."""
  seen = set()
  todo = [exc]
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and not isinstance(e, errors.UserError):
      return e
    todo.extend([e.__cause__, e.__context__,
                 *getattr(e, "exceptions", ())])
  return None


def _reason(exc: BaseException) -> str:
  """One short line: the innermost cause of ``exc`` (tensorstore's words)."""
  seen = set()
  while id(exc) not in seen and (exc.__cause__ or exc.__context__):
    seen.add(id(exc))
    exc = exc.__cause__ or exc.__context__
  lines = str(exc).strip().splitlines() or [""]
  text = f"{type(exc).__name__}: {lines[0]}"
  return text if len(text) <= 240 else text[:237] + "..."


def abstract_like(tree: Any, sharding=None) -> Any:
  """ShapeDtypeStructs (with shardings) mirroring ``tree``.

  Args:
    tree: pytree of arrays or ShapeDtypeStructs.
    sharding: a sharding for every leaf, or None to keep each leaf's own.

  Returns:
    The abstract restore target.
  """
  def one(x):
    s = sharding if sharding is not None else getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  return jax.tree.map(one, tree)


def load_variables(workdir: str, step: int | None = None
                   ) -> dict[str, Any]:
  """Reads ``params`` and ``batch_stats`` of a run's checkpoint as numpy.

  Works whatever the saving topology was (each array is restored onto the
  first local device, then fetched), so a later stage or the depth export
  can start from an earlier run's weights without knowing its exact state
  tree (e.g. a different optimiser).

  Args:
    workdir: the earlier run's workdir (or its ``checkpoints`` folder).
    step: checkpoint step; None for the latest.

  Returns:
    ``{"params": ..., "batch_stats": ..., "step": int}`` (numpy leaves).

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  directory = workdir
  if os.path.basename(os.path.normpath(workdir)) != "checkpoints":
    directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints folder at {directory}")
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit())
  if not steps:
    raise FileNotFoundError(f"no finished checkpoint in {directory}")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f"checkpoint {step} not in {directory} (has "
                            f"{steps})")
  state = load_state_tree(os.path.join(directory, str(step), "state"))
  return {"params": state["params"],
          "batch_stats": state.get("batch_stats") or {},
          "step": int(step)}


def load_state_tree(path: str) -> dict[str, Any]:
  """The whole saved state at ``path`` (``<step>/state``) as numpy: every
  array restored onto the first local device, whatever the saving topology
  was, then fetched (optimiser and EMA teacher included)."""
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = getattr(meta, "item_metadata", meta).tree
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=dev), tree)
  return jax.device_get(
      ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args)))


class Checkpointer:
  """Thin wrapper of ``ocp.CheckpointManager`` for the training loop.

  Args:
    workdir: the run's directory.
    max_to_keep: number of most recent checkpoints kept.
    async_save: save in a background thread (default); tests of exact
      resume work either way.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 3,
               async_save: bool = True):
    self.directory = checkpoint_dir(workdir)
    self.corrupt_directory = corrupt_dir(workdir)
    self._saving = None  # step of a background save not yet checked
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data_iter", "config", "eval_state"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, data_iter: Any | None,
           config: mlc.ConfigDict, eval_state: dict | None = None) -> None:
    """Starts saving ``state`` (+ iterator + config [+ evaluator state]) as
    checkpoint ``step``."""
    items = dict(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
    if eval_state is not None:
      items["eval_state"] = ocp.args.JsonSave(eval_state)
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    with self._save_errors():
      self._mngr.save(step, args=ocp.args.Composite(**items), force=True)
    self._saving = step
    logging.info("checkpoint %d: save started in %s", step, self.directory)

  @contextlib.contextmanager
  def _save_errors(self):
    """Context: a failed (background) save -> ``CheckpointError``."""
    try:
      yield
    except errors.UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      self._raise_save_failure(e)

  def _raise_save_failure(self, exc: BaseException):
    step, self._saving = self._saving, None
    os_err = _find_oserror(exc)
    if os_err is None:
      raise exc
    # Let the save's other writers (orbax threads) end before removing what
    # they wrote; one failed writer does not stop the others.
    try:
      self._mngr.close()
    except Exception:  # pylint: disable=broad-except
      pass  # the same failure, already being reported
    deadline = time.monotonic() + 60
    for t in threading.enumerate():
      if (t is not threading.current_thread() and
          type(t).__module__.startswith("orbax.")):
        t.join(max(0.0, deadline - time.monotonic()))
    removed = []
    pattern = os.path.join(self.directory, f"{'' if step is None else step}"
                           f"*{ocp.utils.TMP_DIR_SUFFIX}*")
    for tmp in glob.glob(pattern):
      shutil.rmtree(tmp, ignore_errors=True)
      removed.append(tmp)
    path = os_err.filename or self.directory
    what = ("no space left on device" if os_err.errno in
            (errno.ENOSPC, errno.EDQUOT) else
            (os_err.strerror or str(os_err)).lower())
    last = [s for s in self.all_steps() if s != step]
    raise errors.CheckpointError(
        f"checkpoint {step} could not be written: {what} at {path}; "
        f"training stopped. Removed the partial {', '.join(removed) or 'files'}."
        f" Last complete checkpoint: "
        f"{max(last) if last else 'none'} in {self.directory}. Free space "
        f"(or use a --workdir on a larger disk) and rerun to resume."
        ) from exc

  def poll(self) -> None:
    """Raises ``CheckpointError`` if a finished background save failed.

    Cheap: does nothing while no save is pending or one is in progress.
    """
    if self._saving is None or self._mngr.is_saving_in_progress():
      return
    # The save is over: waiting returns at once, raising its error if any.
    self.wait()

  def check_model(self, config: mlc.ConfigDict,
                  step: int | None = None) -> None:
    """Refuses to resume a workdir whose checkpoint has another model.

    Compares the ``model`` section saved with ``step`` (default latest) with
    ``config.model``, before orbax reads the state.

    Args:
      config: the new run's config.
      step: the checkpoint to compare with; None for the latest.

    Raises:
      CheckpointError: a ``config.model`` key differs; the message names
        every differing key.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return
    saved = saved_config(self.directory, step)
    if saved is None:
      return  # unreadable: restore() finds out and falls back
    diff = model_differences(saved, config)
    if diff:
      raise errors.CheckpointError(
          f"{self.directory} holds checkpoint {step} of another model "
          f"({'; '.join(diff)}); resume with the saved model settings or "
          "use a new --workdir.")

  def restore(self, step: int | None, abstract_state: Any,
              data_iter: Any | None = None) -> Any:
    """Restores the state (and, in place, the iterator) of ``step``.

    Args:
      step: the checkpoint step, or None for the latest.
      abstract_state: the target: the state tree with ShapeDtypeStruct
        leaves carrying shardings (see ``abstract_like``).
      data_iter: a fresh grain iterator of the same pipeline, set to the
        saved position; None skips it.

    Returns:
      The restored state.

    With ``step=None`` a checkpoint that cannot be read (truncated or
    corrupt files) is moved to ``checkpoints_corrupt/`` and the next older
    one is tried, each skip logged as a warning.

    Raises:
      FileNotFoundError: there is no checkpoint.
      CheckpointError: the saved state has other shapes than
        ``abstract_state`` (another model or optimiser), or no checkpoint is
        readable.
    """
    if step is not None:
      self._check_shapes(step, abstract_state)
      return self._restore(step, abstract_state, data_iter)
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    skipped = []
    for s in steps:
      try:
        self._check_shapes(s, abstract_state)
        state = self._restore(s, abstract_state, data_iter)
      except errors.CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = _reason(e)
        if jax.process_count() > 1:  # no safe rename from every process
          raise errors.CheckpointError(
              f"checkpoint {s} in {self.directory} is unreadable ({reason}); "
              f"move it to {self.corrupt_directory}/ and rerun to resume "
              "from the one before.") from e
        aside = self._move_aside(s)
        logging.warning(
            "checkpoint %d in %s is unreadable (%s); moved it to %s and "
            "trying the next older one.", s, self.directory, reason, aside)
        skipped.append(f"{s} ({reason}; moved to {aside})")
        continue
      if skipped:
        logging.warning("resumed from checkpoint %d; skipped unreadable "
                        "checkpoint(s) %s", s, "; ".join(skipped))
      return state
    raise errors.CheckpointError(
        f"no readable checkpoint in {self.directory}: "
        f"{'; '.join(skipped)}. Delete the workdir to start afresh.")

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    """CheckpointError if the saved leaves' shapes are not the target's.

    Reads orbax's metadata only (a corrupt metadata file raises, which the
    caller treats as an unreadable checkpoint).
    """
    path = os.path.join(self.directory, str(step), "state")
    meta = ocp.PyTreeCheckpointer().metadata(path)
    tree = getattr(meta, "item_metadata", meta).tree
    saved, want = _shape_signature(tree), _shape_signature(abstract_state)
    if saved != want:
      only_saved = sorted(set(saved) - set(want))[:3]
      only_new = sorted(set(want) - set(saved))[:3]
      raise errors.CheckpointError(
          f"checkpoint {step} in {self.directory} holds another state "
          f"({len(saved)} arrays, e.g. {only_saved}; this run has "
          f"{len(want)}, e.g. {only_new}): a different model or optimiser. "
          "Resume with the saved settings or use a new --workdir.")

  def _restore(self, step: int, abstract_state: Any,
               data_iter: Any | None) -> Any:
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    logging.info("restored checkpoint %d from %s", step, self.directory)
    return out["state"]

  def _move_aside(self, step: int) -> str:
    """Renames checkpoint ``step`` into ``checkpoints_corrupt/`` (kept)."""
    dst_dir = self.corrupt_directory
    os.makedirs(dst_dir, exist_ok=True)
    dst, n = os.path.join(dst_dir, str(step)), 1
    while os.path.exists(dst):
      dst, n = os.path.join(dst_dir, f"{step}.{n}"), n + 1
    os.rename(os.path.join(self.directory, str(step)), dst)
    self._mngr.reload()
    return dst

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    """The config dict saved with ``step`` (default latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self._mngr.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return out["config"]

  def restore_eval_state(self, step: int | None = None) -> dict | None:
    """The evaluators' JSON state saved with ``step`` (None if absent)."""
    step = self.latest_step() if step is None else step
    if step is None or not os.path.isdir(os.path.join(
        self.directory, str(step), "eval_state")):
      return None
    out = self._mngr.restore(
        step, args=ocp.args.Composite(eval_state=ocp.args.JsonRestore()))
    return out["eval_state"]

  def reached_preemption(self, step: int) -> bool:
    """Multi-host agreement that a preemption notice arrived (orbax)."""
    return self._mngr.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until the last save is on disk; CheckpointError if it failed."""
    with self._save_errors():
      self._mngr.wait_until_finished()
      self._mngr.check_for_errors()
    self._saving = None

  def close(self) -> None:
    self._mngr.close()
