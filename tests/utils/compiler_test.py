"""Tests of the XLA_FLAGS merging of sdeseg_jax/utils/compiler.py (no jax)."""

from absl.testing import absltest

from sdeseg_jax.utils import compiler

FLAG = "--xla_cpu_experimental_ynn_fusion_type="


class MergedFlagsTest(absltest.TestCase):

  def test_unset_gives_the_default(self):
    self.assertEqual(compiler.merged_xla_flags(None), FLAG)
    self.assertEqual(compiler.merged_xla_flags(""), FLAG)

  def test_appended_after_user_flags_in_their_order(self):
    user = "--xla_force_host_platform_device_count=4  --xla_dump_to=/tmp/d"
    self.assertEqual(
        compiler.merged_xla_flags(user),
        "--xla_force_host_platform_device_count=4 --xla_dump_to=/tmp/d "
        + FLAG)

  def test_idempotent(self):
    once = compiler.merged_xla_flags("--xla_dump_to=/tmp/d")
    self.assertEqual(compiler.merged_xla_flags(once), once)
    self.assertEqual(once.count("ynn_fusion_type"), 1)

  def test_user_setting_of_the_same_flag_wins(self):
    for user in ("--xla_cpu_experimental_ynn_fusion_type=dot",
                 "--xla_cpu_experimental_ynn_fusion_type"):
      self.assertEqual(compiler.merged_xla_flags(user), user)

  def test_similar_flag_name_is_not_the_same_flag(self):
    user = "--xla_cpu_experimental_ynn_fusion_type_x=1"
    self.assertEqual(compiler.merged_xla_flags(user), user + " " + FLAG)


class ApplyDefaultsTest(absltest.TestCase):

  def test_sets_xla_flags_of_the_given_env(self):
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    compiler.apply_defaults(env)
    self.assertEqual(env["XLA_FLAGS"], "--xla_dump_to=/tmp/d " + FLAG)

  def test_opt_out_leaves_env_alone(self):
    for value in ("1", "true", "YES"):
      env = {compiler.OPT_OUT_ENV: value}
      compiler.apply_defaults(env)
      self.assertNotIn("XLA_FLAGS", env)
    env = {compiler.OPT_OUT_ENV: "0"}
    compiler.apply_defaults(env)
    self.assertEqual(env["XLA_FLAGS"], FLAG)

  def test_importing_the_package_applied_it_here(self):
    # conftest imports sdeseg_jax before jax starts a backend.
    import os  # pylint: disable=g-import-not-at-top
    if not compiler.ynn_opted_out(os.environ):
      self.assertIn("--xla_cpu_experimental_ynn_fusion_type",
                    os.environ["XLA_FLAGS"])


if __name__ == "__main__":
  absltest.main()
