"""Orbax checkpoints of the train state, the data iterator and the config.

Layout: ``<workdir>/checkpoints/<step>/{state,data_iter,config}``. Every
checkpoint holds

* ``state``: the ``TrainState`` pytree (``tx`` is static and rebuilt from the
  config), restored onto the mesh through an abstract target of
  ``jax.ShapeDtypeStruct``s with shardings, so that optax NamedTuples come back
  as NamedTuples and arrays land replicated without a host round trip;
* ``data_iter``: the grain iterator state (one small JSON per process), so a
  resumed run sees exactly the batches an uninterrupted one would;
* ``config``: the run's config as JSON, for humans and for ``export_depth``.

Saves are asynchronous; ``wait()`` blocks until the last one is on disk. A
checkpoint directory only appears under its final name once complete (orbax
writes to a temporary name and renames), so a crash never leaves a
half-written "latest" checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import grain
import jax
import ml_collections as mlc
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


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
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data_iter", "config"))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any, data_iter: Any | None,
           config: mlc.ConfigDict) -> None:
    """Starts saving ``state`` (+ iterator + config) as checkpoint ``step``."""
    items = dict(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    self._mngr.save(step, args=ocp.args.Composite(**items), force=True)
    logging.info("checkpoint %d: save started in %s", step, self.directory)

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

    Raises:
      FileNotFoundError: there is no checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    logging.info("restored checkpoint %d from %s", step, self.directory)
    return out["state"]

  def restore_config(self, step: int | None = None) -> dict[str, Any]:
    """The config dict saved with ``step`` (default latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self._mngr.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return out["config"]

  def reached_preemption(self, step: int) -> bool:
    """Multi-host agreement that a preemption notice arrived (orbax)."""
    return self._mngr.reached_preemption(step)

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()
