"""Tests of the shared test helpers (``tests/_fixtures.py``)."""

from absl.testing import absltest
import jax

from tests import _fixtures


class FixturesTest(absltest.TestCase):

  def test_tiny_demo_config_is_locked_and_tiny(self):
    config = _fixtures.tiny_demo_config()
    self.assertTrue(config.is_locked)
    self.assertEqual(config.minicity.target.width, 64)
    self.assertEqual(config.ssda.train.num_steps, 2)
    with self.assertRaises(AttributeError):
      config.new_key = 1

  def test_load_config_names_a_missing_file(self):
    with self.assertRaisesRegex(FileNotFoundError, "configs/nope.py"):
      _fixtures.load_config("nope")

  def test_cheap_compiles_sets_and_restores_the_flag(self):
    flag = "jax_disable_most_optimizations"
    before = jax.config.read(flag)
    with self.assertRaises(KeyError):
      with _fixtures.cheap_compiles():
        self.assertTrue(jax.config.read(flag))
        raise KeyError("restored even on an error")
    self.assertEqual(jax.config.read(flag), before)


if __name__ == "__main__":
  absltest.main()
