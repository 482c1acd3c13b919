"""Helpers shared by test files: config loading, a generated MiniCity and
cheap XLA compiles.

Imported as ``from tests import _fixtures`` (pytest runs with the repository
root on ``sys.path``, see ``pyproject.toml``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from typing import Callable, Iterator

import jax
import ml_collections as mlc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str | None = None, *, lock: bool = True
                ) -> mlc.ConfigDict:
  """``configs/<name>.py``'s ``get_config(arg)``, loaded from its file.

  Loading by path (not ``import configs.<name>``) gives every call a fresh
  module, as ``--config=configs/<name>.py:<arg>`` does.

  Args:
    name: the config file's name without ``.py``, e.g. ``"demo"``.
    arg: the config argument, e.g. ``"tiny"``.
    lock: lock the config (as the command line does).

  Returns:
    The config.

  Raises:
    FileNotFoundError: there is no ``configs/<name>.py``.
  """
  path = os.path.join(ROOT, "configs", name + ".py")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path}")
  spec = importlib.util.spec_from_file_location("cfg_" + name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  if lock:
    config.lock()
  return config


def tiny_demo_config(arg: str = "tiny") -> mlc.ConfigDict:
  """The CI-size demo config (``configs/demo.py:tiny``), locked.

  Its MiniCity domains have 4 train and 2 val sequences of 64x32 images;
  every training stage runs 2 steps.
  """
  return load_config("demo", arg)


@contextlib.contextmanager
def cheap_compiles() -> Iterator[None]:
  """XLA compiles with most optimisations off, inside the block.

  Tests that train a few steps of a whole network spend most of their time
  in XLA's optimisation passes (on CPU: 3-4x the compile time of the
  unoptimised program) and little running it. The programs compute the
  same function; only fusion and code generation differ, so results may
  differ by float rounding. Use it only where a test's assertions allow
  that, never around a numerical parity test.
  """
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", old)


def module_cheap_compiles() -> tuple[Callable[[], None], Callable[[], None]]:
  """``(setUpModule, tearDownModule)`` that hold :func:`cheap_compiles`
  over a whole test module::

    setUpModule, tearDownModule = _fixtures.module_cheap_compiles()

  The same caveat applies: only for modules whose assertions allow float
  rounding differences from the optimised program.
  """
  stack = contextlib.ExitStack()

  def set_up() -> None:
    stack.enter_context(cheap_compiles())

  return set_up, stack.close


def generate_minicity(num_train: int, num_val: int, *, width: int = 64,
                      height: int = 32, layout: str = "cityscapes"
                      ) -> tuple[str, str, str]:
  """Renders a small MiniCity (seed 0) into a fresh temporary folder.

  Args:
    num_train, num_val: sequences per split.
    width, height: image size.
    layout: dataset layout.

  Returns:
    ``(tmp, root, tfds_dir)``: the folder to delete afterwards, the dataset
    root inside it and a tfds folder beside it.
  """
  from sdeseg_jax.data import minicity  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp()
  root = os.path.join(tmp, "cs")
  minicity.generate(root, layout, 0, width=width, height=height,
                    num_train_sequences=num_train,
                    num_val_sequences=num_val, log=None)
  return tmp, root, os.path.join(tmp, "tfds")
