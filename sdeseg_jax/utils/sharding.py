"""Device mesh and shardings for data-parallel training.

The whole project uses one 1-D mesh with a single axis, ``"data"``, over every
device of every process. Batches are split along their leading axis over that
axis; parameters, optimiser state and the EMA teacher are replicated. Under
``jax.jit`` with these shardings XLA inserts the gradient all-reduce itself, and
``flax.linen.BatchNorm`` computes its statistics over the *global* batch (i.e.
synchronised BatchNorm across devices, unlike per-GPU BN in the PyTorch
reference).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """Returns a 1-D ``("data",)`` mesh over ``devices`` (default: all devices).

  Axis types are ``Auto`` so that eager code on sharded arrays works outside a
  ``jax.set_mesh`` context (``jax.make_mesh`` defaults to ``Explicit``).
  """
  devices = jax.devices() if devices is None else devices
  return Mesh(
      np.asarray(devices), (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device."""
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int) -> int:
  """Per-process batch size; checks the global size divides evenly."""
  n_proc = jax.process_count()
  n_dev = jax.device_count()
  if global_batch_size % n_dev:
    raise ValueError(
        f"batch size {global_batch_size} is not divisible by the number of "
        f"devices ({n_dev}); choose a multiple of {n_dev}.")
  return global_batch_size // n_proc


def host_to_global(batch: Any, mesh: Mesh) -> Any:
  """Turns a per-process numpy batch pytree into global sharded ``jax.Array``s.

  Args:
    batch: pytree of numpy arrays whose leading axis is this process's share
      of the global batch (``global_batch // process_count``).
    mesh: the data-parallel mesh.

  Returns:
    The same pytree with every leaf a global ``jax.Array`` of leading size
    ``global_batch``, sharded over ``"data"``.
  """
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree on every device of ``mesh`` (replicated)."""
  return jax.device_put(tree, replicated(mesh))
