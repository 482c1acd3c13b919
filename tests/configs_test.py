"""Builds every config file and every named variant, so stale configs fail CI.

Convention: a config file ``configs/x.py`` defines ``get_config(arg=None)`` and
may define ``VARIANTS``, a tuple of ``arg`` strings naming its variants (e.g.
the rows of a paper table). Each one must build, lock, name a known mode,
survive a round trip through ``--config`` flag parsing, construct its mode's
task and give a training state under ``jax.eval_shape``. Every
``--config.<key>=`` override written in the docs must name a key that exists.
Config files import no JAX, parse their argument with the one typed parser
(``common.parse_arg``), feed one seed to everything and derive what depends
on the run length from ``num_steps``.
"""

import glob
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections

from configs import common
from sdeseg_jax import main as sdeseg_main

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG_FILES = sorted(
    f for f in glob.glob(os.path.join(_ROOT, "configs", "*.py"))
    if os.path.basename(f) not in ("__init__.py", "common.py"))
# Modes that train a state: module and task class.
_TASKS = {"sde": ("sdeseg_jax.train.sde", "SDETask"),
          "ssl": ("sdeseg_jax.train.ssl", "SSLTask"),
          "ssda": ("sdeseg_jax.train.ssda", "SSDATask")}


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


def _build(path, variant):
  module = _load(path)
  return module.get_config(variant) if variant else module.get_config()


def _training_configs(config):
  """The configs of ``config`` that train a state (the demo has five)."""
  if config.mode == "demo":
    return [config.sde_target, config.sde_source, config.target_only,
            config.source_target, config.ssda]
  if config.mode in _TASKS:
    return [config]
  return []


def _state_key(c) -> str:
  """What the state's structure depends on (model, optimiser structure)."""
  groups = [(g[0], g[1] == "frozen") for g in c.optim.groups]
  return json.dumps([c.mode, c.model.to_dict(), c.optim.name, groups,
                     c.optim.clip_norm > 0, c.train.use_ema], sort_keys=True)


_STATES = {}


def _abstract_state(task, config, batch):
  """``jax.eval_shape`` of the step-0 state, once per state structure."""
  key = _state_key(config)
  if key not in _STATES:
    # pylint: disable-next=g-import-not-at-top
    from sdeseg_jax.train import trainer
    _STATES[key] = jax.eval_shape(
        trainer.create_state_fn(task, config, batch))
  return _STATES[key]


def _has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def _doc_overrides():
  """(source, config file or None, its argument, key) of every
  ``--config.<key>=`` written in README.md, docs/ and the config files."""
  files = ([os.path.join(_ROOT, "README.md")] +
           sorted(glob.glob(os.path.join(_ROOT, "docs", "*.md"))) +
           _CONFIG_FILES)
  for path in files:
    with open(path) as f:
      text = f.read().replace("\\\n", " ")
    for lineno, line in enumerate(text.splitlines(), 1):
      keys = re.findall(r"--config\.([A-Za-z_][\w.]*)=", line)
      if not keys:
        continue
      m = re.search(r"--config=configs/(\w+)\.py(?::([^\s`|]+))?", line)
      name, arg = (m.group(1), m.group(2)) if m else (None, None)
      for key in keys:
        yield (f"{os.path.relpath(path, _ROOT)}:{lineno}", name, arg, key)


class ConfigsTest(parameterized.TestCase):

  def test_there_are_configs(self):
    self.assertIn(os.path.join(_ROOT, "configs", "demo.py"), _CONFIG_FILES)

  @parameterized.named_parameters(*_cases())
  def test_builds(self, path, variant):
    config = _build(path, variant)
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
    for c in _training_configs(config):
      tc = c.train
      # One seed feeds initialisation and data order.
      self.assertEqual(tc.seed, c.seed, "train.seed must follow seed")
      # Intervals follow the run length: a runlocal run still logs,
      # checkpoints and (where it evaluates) evaluates within its steps.
      for k in ("log_every", "checkpoint_every", "eval_every"):
        self.assertLessEqual(tc[k], tc.num_steps, f"{path}:{variant} {k}")
      # Dead options stay gone.
      self.assertNotIn("frozen_encoder_bn", c.model)
      if c.mode == "ssda":
        self.assertNotIn("batch_size", tc)
        self.assertNotIn("mgs_criterion", c.ssda)
      # The mode's task and its state, abstractly (nothing allocated).
      module_name, cls = _TASKS[c.mode]
      module = importlib.import_module(module_name)
      task = getattr(module, cls)(c)
      batch = module.example_batch(c)
      state = _abstract_state(task, c, batch)
      self.assertGreater(len(jax.tree.leaves(state.params)), 0)
      self.assertEqual(state.ema_params is not None, bool(tc.use_ema))

  def test_every_config_has_runlocal_and_the_typed_parser(self):
    for path in _CONFIG_FILES:
      name = os.path.basename(path)
      module = _load(path)
      self.assertIsInstance(module.get_config("runlocal"),
                            ml_collections.ConfigDict, name)
      with self.assertRaisesRegex(ValueError, r"runlocal='ture'.*true/false",
                                  msg=name):
        module.get_config("runlocal=ture")
      with self.assertRaisesRegex(ValueError, r"unknown config argument "
                                  r"'no_such_arg'", msg=name):
        module.get_config("no_such_arg=1")

  def test_configs_import_no_jax(self):
    code = (
        "import glob, importlib.util, sys\n"
        "for p in sorted(glob.glob('configs/*.py')):\n"
        "  s = importlib.util.spec_from_file_location('c', p)\n"
        "  m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
        "  if hasattr(m, 'get_config'): m.get_config()\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in "
        "('jax', 'jaxlib', 'flax', 'tensorflow'))\n"
        "print(bad[:5])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=_ROOT,
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=_ROOT))
    self.assertEqual(out.stdout.strip(), "[]", out.stderr[-2000:])

  def test_documented_overrides_exist(self):
    seen = 0
    for where, name, arg, key in _doc_overrides():
      seen += 1
      if name is None:  # a generic override: some config must have it
        self.assertTrue(
            any(_has_key(_build(p, None), key) for p in _CONFIG_FILES),
            f"{where}: --config.{key} is in no config")
        continue
      path = os.path.join(_ROOT, "configs", name + ".py")
      try:
        config = _build(path, arg)
      except ValueError:  # a placeholder argument such as export=S
        config = _build(path, None)
      self.assertTrue(_has_key(config, key),
                      f"{where}: configs/{name}.py has no key {key}")
    self.assertGreater(seen, 10)

  def test_unknown_mode_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "not a known mode"):
      sdeseg_main.resolve_mode("trian")


class ParseArgTest(absltest.TestCase):

  def _parse(self, arg):
    return common.parse_arg(arg, runlocal=False, steps=3, lr=0.1, row="a")

  def test_types(self):
    a = self._parse("runlocal,steps=5,lr=2,row=b")
    self.assertEqual((a.runlocal, a.steps, a.lr, a.row), (True, 5, 2.0, "b"))
    self.assertIsInstance(a.lr, float)
    for text, want in (("true", True), ("YES", True), ("1", True),
                       ("False", False), ("no", False), ("0", False)):
      self.assertEqual(self._parse(f"runlocal={text}").runlocal, want, text)
    self.assertEqual(self._parse(None).steps, 3)
    self.assertEqual(self._parse("").runlocal, False)

  def test_errors_name_argument_value_and_form(self):
    for arg, pattern in (
        ("runlocal=ture", r"runlocal='ture'.*true/false/1/0/yes/no"),
        ("steps=ten", r"steps='ten'.*integer"),
        ("steps=2.5", r"steps='2.5'.*integer"),
        ("lr=fast", r"lr='fast'.*number"),
        ("step=3", r"unknown config argument 'step'.*known: lr, row, "
                   r"runlocal, steps"),
        ("steps", r"'steps' needs a value: steps=<value>")):
      with self.assertRaisesRegex(ValueError, pattern, msg=arg):
        self._parse(arg)


class BuildersTest(absltest.TestCase):

  def test_unknown_keys_are_refused(self):
    with self.assertRaisesRegex(ValueError, r"stream config.*'crop_szie'"):
      common.stream_config("s", "cityscapes", crop_szie=(8, 8))
    with self.assertRaisesRegex(ValueError, r"train config.*'num_step'"):
      common.train_config(num_step=5)
    for builder in (common.optim_config, common.sde_loss_config,
                    common.minicity_config, common.model_config):
      with self.assertRaisesRegex(ValueError, "'typo_key'"):
        builder(typo_key=1)

  def test_run_length_values_follow_num_steps(self):
    from tests import _fixtures  # pylint: disable=g-import-not-at-top
    config = _fixtures.load_config("ssda_gta", "runlocal")
    # The LR drop falls inside the 4 steps (it was 29,999 before).
    self.assertEqual(config.train.num_steps, 4)
    self.assertEqual(config.optim.step_size, 3)
    full = _fixtures.load_config("ssda_gta")
    self.assertEqual(full.optim.step_size, 29_999)
    self.assertEqual(full.train.eval_every, 2500)
    # An override of num_steps carries over; setting a derived key replaces
    # it without touching num_steps.
    config = _fixtures.load_config("sde_minicity", lock=False)
    config.train.num_steps = 40
    self.assertEqual((config.optim.step_size, config.train.log_every,
                      config.train.checkpoint_every), (30, 14, 20))
    config.optim.step_size = 7
    self.assertEqual((config.optim.step_size, config.train.num_steps),
                     (7, 40))

  def test_one_seed(self):
    from tests import _fixtures  # pylint: disable=g-import-not-at-top
    config = _fixtures.load_config("ssl_minicity", "runlocal", lock=False)
    config.seed = 123
    self.assertEqual(config.train.seed, 123)
    self.assertEqual(config.data.labeled.subset.seed, 123)
    config.train.seed = 5  # split on purpose: only the follower changes
    self.assertEqual(config.seed, 123)
    ssda = _fixtures.load_config("ssda_gta", "seed=7")
    self.assertEqual((ssda.seed, ssda.train.seed), (7, 7))
    # The reference's fixed labeled subset (np.random.seed(42)).
    self.assertEqual(ssda.data.target.subset.seed, 42)


if __name__ == "__main__":
  absltest.main()
