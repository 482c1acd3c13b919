"""Builds every config file and every named variant, so stale configs fail CI.

Convention: a config file ``configs/x.py`` defines ``get_config(arg=None)`` and
may define ``VARIANTS``, a tuple of ``arg`` strings naming its variants (e.g.
the rows of a paper table). Each one must build, lock, name a known mode, and
survive a round trip through ``--config`` flag parsing.
"""

import glob
import importlib.util
import os

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from sdeseg_jax import main as sdeseg_main

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_FILES = sorted(
    f for f in glob.glob(os.path.join(_ROOT, "configs", "*.py"))
    if os.path.basename(f) not in ("__init__.py", "common.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cases():
  for path in _CONFIG_FILES:
    module = _load(path)
    name = os.path.basename(path)
    yield (name, path, None)
    for variant in getattr(module, "VARIANTS", ()):
      yield (f"{name}:{variant}", path, variant)


class ConfigsTest(parameterized.TestCase):

  def test_there_are_configs(self):
    self.assertIn(os.path.join(_ROOT, "configs", "demo.py"), _CONFIG_FILES)

  @parameterized.named_parameters(*_cases())
  def test_builds(self, path, variant):
    module = _load(path)
    config = module.get_config(variant) if variant else module.get_config()
    self.assertIsInstance(config, ml_collections.ConfigDict)
    self.assertIn(config.mode, sdeseg_main.MODES,
                  f"{path}: mode {config.mode!r} has no entry point")
    # Importing the mode's module catches configs pointing at moved code.
    self.assertTrue(callable(sdeseg_main.resolve_mode(config.mode)))
    locked = ml_collections.config_dict.ConfigDict(config)
    locked.lock()
    # Locked configs refuse unknown keys, as the --config flag does.
    with self.assertRaises(AttributeError):
      locked.this_key_does_not_exist = 1
    # Every value must serialise: checkpoints store the config as JSON.
    self.assertTrue(config.to_json_best_effort())

  def test_unknown_mode_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "not a known mode"):
      sdeseg_main.resolve_mode("trian")


if __name__ == "__main__":
  absltest.main()
