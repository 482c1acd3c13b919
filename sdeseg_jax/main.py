r"""Command-line entry point for every job of the project.

  python -m sdeseg_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m sdeseg_jax.main --config=configs/sde_minicity.py --workdir=... \
      --config.train.num_steps=200

The config file is an ml_collections ``get_config(arg)`` file, locked so that a
misspelt ``--config.x.y`` override fails loudly. ``config.mode`` chooses what
runs; every mode is a function ``run(config, workdir)``.

A mistake the user can fix (a bad flag or config key, a missing or corrupt
file, a checkpoint of another model, a full disk, a non-finite loss) ends the
command with one line ``error: ...`` on stderr and exit code 1;
``SDESEG_TRACEBACK=1`` or ``--verbosity=1`` adds the traceback. Log lines of
libraries (orbax, tfds, grain) below WARNING are hidden unless
``--verbosity=1``.
"""

from __future__ import annotations

import importlib
import logging as py_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from sdeseg_jax import errors

# mode -> "module:function". Modules are imported lazily so that, e.g., the
# MiniCity generator does not pay for importing flax.
MODES = {
    "demo": "sdeseg_jax.demo:run",
    "prepare": "sdeseg_jax.data.prepare:run",
    "sde": "sdeseg_jax.train.sde:run",
    "ssl": "sdeseg_jax.train.ssl:run",
    "export_depth": "sdeseg_jax.train.export:run",
    "ssda": "sdeseg_jax.train.ssda:run",
    "select": "sdeseg_jax.selection.program:run",
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
    raise errors.ConfigError(
        f"config.mode={mode!r} is not a known mode; choose one of "
        f"{sorted(MODES)}.")
  module_name, fn_name = MODES[mode].split(":")
  return getattr(importlib.import_module(module_name), fn_name)


def _flag_value(argv, name: str) -> str | None:
  """The last ``--name=value`` / ``--name value`` of ``argv``."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      value = a.split("=", 1)[1]
    elif a == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def parse_flags(argv):
  """absl's flag parser, with one-line errors naming the flag (exit 1).

  Also checks that the ``--config`` file exists, which ml_collections only
  reports when the config is first used, at the end of a traceback.
  """
  config_arg = _flag_value(argv, "config")
  try:
    if config_arg is not None:
      path = config_arg.split(":", 1)[0]
      if not os.path.isfile(path):
        raise errors.ConfigError(
            f"--config={config_arg}: no config file {path} (relative paths "
            f"start at {os.getcwd()}); e.g. --config=configs/demo.py")
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      text = str(e).strip()
      if "Traceback (most recent call last)" in text:  # the config file's
        head = text.split("Traceback (most recent call last)")[0].strip()
        text = f"{head} {text.splitlines()[-1].strip()}"
      raise errors.ConfigError(f"{text} (--helpfull lists the flags)") from e
    except KeyError as e:  # an override of a key the config does not have
      text = str(e.args[0]) if e.args else ""
      key = text.split("'")[1] if text.count("'") >= 2 else text
      hint = text.split("'", 2)[2].strip(" ,;.") if text.count("'") >= 2 else ""
      bad = [a for a in argv if a.startswith("--config.") and
             key in a.split("=")[0].split(".")[1:]] or ["a --config.* flag"]
      raise errors.ConfigError(
          f"{bad[0]}: the config of {config_arg} has no key {key!r}"
          f"{'; ' + hint if hint else ''}; --config.<key> only sets keys "
          "that the config file defines.") from e
  except Exception as e:  # pylint: disable=broad-except
    if not errors.is_user_error(e) and not isinstance(e, errors.ConfigError):
      raise
    errors.report(e)
    sys.exit(1)


# Where the log records worth a user's attention come from below WARNING:
# the project, clu's metric lines and its progress notes (steps/s, ETA).
_PROJECT_DIR = os.path.dirname(os.path.abspath(errors.__file__)) + os.sep
_KEEP_INFO_FROM = (os.sep + os.path.join("clu", "metric_writers") + os.sep,
                   os.sep + os.path.join("clu", "platform") + os.sep)
# tfds warns about every custom builder config, i.e. every stream; orbax
# about the per-item metadata it never writes (read for the shape check).
_DROP_MESSAGES = ("Using custom data configuration",
                  "Metadata file does not exist")


class _LibraryNoiseFilter(py_logging.Filter):
  """Drops other libraries' records below WARNING (and a few warnings)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if any(str(record.msg).startswith(m) for m in _DROP_MESSAGES):
      return False
    if record.levelno >= py_logging.WARNING:
      return True
    path = os.path.abspath(record.pathname)
    return (path.startswith(_PROJECT_DIR) or
            any(k in path for k in _KEEP_INFO_FROM))


def quiet_libraries() -> None:
  """Hides library INFO chatter unless ``--verbosity=1`` or more."""
  if logging.get_verbosity() >= 1:
    return
  logging.get_absl_handler().addFilter(_LibraryNoiseFilter())
  # TensorFlow's C++ INFO lines (oneDNN notices), imported later via clu.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def writable_workdir(workdir: str) -> str:
  """Creates ``workdir`` and checks that files can be written there.

  Raises:
    ConfigError: naming the folder, if it cannot be created or written.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise errors.ConfigError(
        f"--workdir={workdir} is not a writable folder "
        f"({e.strerror or e}); choose another --workdir.") from e
  return workdir


@errors.cli_main
def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(
        f"unexpected arguments {argv[1:]}: every setting is a flag, e.g. "
        "--config.train.num_steps=10")
  if _CONFIG.value is None:
    raise errors.ConfigError(
        "--config is required, e.g. --config=configs/demo.py")
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if not workdir:
    raise errors.ConfigError(
        "--workdir is required (where outputs are written).")
  quiet_libraries()
  workdir = writable_workdir(workdir)
  if _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value)
    logging.info("process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
  logging.info("mode=%s workdir=%s", config.mode, workdir)
  run = resolve_mode(config.mode)
  run(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
