"""The demo end to end at reduced size (``configs/demo.py:tiny``).

Generate MiniCity (both domains) -> prepare -> SDE on each domain -> export
pseudo depth -> SSDA (CDM + TDM + MGS + multi-task) -> evaluate -> report,
then a rerun in the same workdir that must skip or resume every stage.

Compiling dominates the cost on a CPU (the SSDA step and the parameter
initialisations); the test compiles with XLA's optimisations off
(``_fixtures.cheap_compiles``: about 3x less compile time, and a 2-step run
does not notice the slower code) and relies on the session's persistent
compilation cache (tests/conftest.py): the two SDE stages compile the same
step, the report and the resumed SSDA stage the same evaluation.
"""

import json
import os
import shutil
import tempfile

from absl.testing import absltest

from sdeseg_jax import demo
from sdeseg_jax.train import checkpoint as ckpt_lib
from tests import _fixtures


class DemoEndToEndTest(absltest.TestCase):

  def test_tiny_demo_runs_reports_and_resumes(self):
    workdir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
    self.enter_context(_fixtures.cheap_compiles())
    config = _fixtures.tiny_demo_config()
    logs = []
    demo.run(config, workdir, log=logs.append)
    text = "\n".join(logs)
    for name, _ in demo.STAGES:
      self.assertIn(f": {name} (", text)
    # Every stage left its output.
    for role in ("target", "source"):
      index = json.load(open(os.path.join(workdir, "pseudo_depth", role,
                                          "index.json")))
      self.assertEqual(index["counts"], {"train": 4, "val": 2})
      self.assertFalse(index["normalize"])  # paper depth scale: raw disp
    steps = config.ssda.train.num_steps
    rec = json.load(open(os.path.join(workdir, "ssda", "eval",
                                      "segmentation", "latest.json")))
    self.assertEqual(rec["step"], steps)
    self.assertLen(rec["iou"], 19)
    self.assertBetween(rec["miou"], 0.0, 100.0)
    report = open(os.path.join(workdir, "report.md")).read()
    self.assertIn("| SSDA full |", report)
    self.assertIn("| Method | Road |", report)   # per-class table
    self.assertIn("abs_rel", report)            # depth metrics
    for png in ("predictions.png", "depthmix.png"):
      path = os.path.join(workdir, "report_images", png)
      self.assertGreater(os.path.getsize(path), 100)
      self.assertIn(f"report_images/{png}", report)
    self.assertEqual(
        ckpt_lib.Checkpointer(os.path.join(workdir, "ssda")).latest_step(),
        steps)

    # Rerun: everything is skipped.
    logs2 = []
    demo.run(config, workdir, log=logs2.append)
    text2 = "\n".join(logs2)
    for name in ("sde_target", "sde_source", "export_target",
                 "export_source", "ssda"):
      self.assertIn(f"[{name}] done, skipped", text2)
    self.assertNotIn("pseudo disparities ->", text2)
    # An interrupted SSDA stage (no completion marker) resumes from its
    # checkpoint instead of training again, with the same result.
    os.remove(os.path.join(workdir, "stages", "ssda.json"))
    os.remove(os.path.join(workdir, "stages", "report.json"))
    logs3 = []
    demo.run(config, workdir, log=logs3.append, stages=("ssda", "report"))
    done = json.load(open(os.path.join(workdir, "stages", "ssda.json")))
    self.assertAlmostEqual(done["miou"], rec["miou"])
    self.assertEqual(
        ckpt_lib.Checkpointer(os.path.join(workdir, "ssda")).all_steps()[-1],
        steps)
    with self.assertRaisesRegex(ValueError, "unknown demo stages"):
      demo.run(config, workdir, stages=("train",))


if __name__ == "__main__":
  absltest.main()
