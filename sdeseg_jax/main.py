r"""Command-line entry point for every job of the project.

  python -m sdeseg_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m sdeseg_jax.main --config=configs/sde_minicity.py --workdir=... \
      --config.train.num_steps=200

The config file is an ml_collections ``get_config(arg)`` file, locked so that a
misspelt ``--config.x.y`` override fails loudly. ``config.mode`` chooses what
runs; every mode is a function ``run(config, workdir)``.
"""

from __future__ import annotations

import importlib
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

# mode -> "module:function". Modules are imported lazily so that, e.g., the
# MiniCity generator does not pay for importing flax.
MODES = {
    "demo": "sdeseg_jax.demo:run",
    "prepare": "sdeseg_jax.data.prepare:run",
    "sde": "sdeseg_jax.train.sde:run",
    "ssl": "sdeseg_jax.train.ssl:run",
    "export_depth": "sdeseg_jax.train.export:run",
    "ssda": "sdeseg_jax.train.ssda:run",
    "predict": "sdeseg_jax.predict.predict:run",
    "evaluate": "sdeseg_jax.predict.evaluate:run",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and outputs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() before anything else (multi-host "
    "GPU/TPU). On TPU pods and SLURM the arguments are auto-detected; "
    "elsewhere pass --coordinator_address/--num_processes/--process_id.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Index of this process (multi-host).")


def resolve_mode(mode: str):
  """Returns the ``run(config, workdir)`` function of ``mode``."""
  if mode not in MODES:
    raise ValueError(
        f"config.mode={mode!r} is not a known mode; choose one of "
        f"{sorted(MODES)}.")
  module_name, fn_name = MODES[mode].split(":")
  return getattr(importlib.import_module(module_name), fn_name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/demo.py")
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError("--workdir is required (where outputs are written).")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value)
    logging.info("process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
  os.makedirs(workdir, exist_ok=True)
  logging.info("mode=%s workdir=%s", config.mode, workdir)
  run = resolve_mode(config.mode)
  run(config, workdir)


if __name__ == "__main__":
  app.run(main)
