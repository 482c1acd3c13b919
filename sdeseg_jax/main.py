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
    "export_depth": "sdeseg_jax.train.export:run",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and outputs.")


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
  os.makedirs(workdir, exist_ok=True)
  logging.info("mode=%s workdir=%s", config.mode, workdir)
  run = resolve_mode(config.mode)
  run(config, workdir)


if __name__ == "__main__":
  app.run(main)
