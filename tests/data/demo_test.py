"""Tests of mode ``demo`` (its data stages) and mode ``prepare``."""

import os
import shutil
import tempfile

from absl.testing import absltest

from sdeseg_jax import demo
from sdeseg_jax.data import prepare
from tests import _fixtures

# The data stages only; tests/demo_e2e_test.py runs the whole demo.
_DATA_STAGES = ("generate", "prepare")


class DemoTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)

  def test_demo_stages_run_and_resume(self):
    config = _fixtures.tiny_demo_config()
    logs = []
    demo.run(config, self.workdir, log=logs.append, stages=_DATA_STAGES)
    text = "\n".join(logs)
    for name in ("minicity_cityscapes", "minicity_gta5"):
      self.assertTrue(os.path.isfile(os.path.join(
          self.workdir, "data", name, "minicity.json")))
    # Statistics: counts per split, sizes, intrinsics, class frequencies.
    self.assertIn("train: 4 samples (4 labeled, 4 with depth)", text)
    self.assertIn("val: 2 samples", text)
    self.assertIn("image sizes [[64, 32]]", text)
    self.assertIn("class pixel freq: road", text)
    self.assertIn("intrinsics", text)
    stats = [f for f in os.listdir(self.workdir) if f.startswith("stats_")]
    self.assertLen(stats, 2)
    # Rerun: generation is skipped, the statistics are the same.
    logs2 = []
    demo.run(config, self.workdir, log=logs2.append, stages=_DATA_STAGES)
    self.assertIn("skipped", "\n".join(logs2))
    self.assertNotIn("MiniCity cityscapes ->", "\n".join(logs2))
    self.assertEqual([l for l in logs if l.startswith("==")],
                     [l for l in logs2 if l.startswith("==")])

  def test_prepare_mode(self):
    config = _fixtures.tiny_demo_config()
    demo.stage_generate(config, self.workdir, log=lambda s: None)
    path = os.path.join(self.workdir, "data", "minicity_gta5")
    pconfig = _fixtures.load_config("prepare",
                                    f"layout=gta5,path={path},val_count=2")
    stats = prepare.run(pconfig, self.workdir)
    self.assertEqual((stats["train"]["count"], stats["val"]["count"]),
                     (4, 2))
    bad = _fixtures.load_config("prepare", "layout=gta5,path=" + os.path.join(
        self.workdir, "missing"))
    with self.assertRaisesRegex(ValueError, "missing folder"):
      prepare.run(bad, self.workdir)


if __name__ == "__main__":
  absltest.main()
