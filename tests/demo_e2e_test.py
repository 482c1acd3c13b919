"""The demo end to end at reduced size (``configs/demo.py:tiny``).

Generate MiniCity (both domains) -> prepare -> SDE on each domain -> export
pseudo depth -> the two baselines (target only, source + target) and SSDA
(CDM + TDM + MGS + multi-task) -> evaluate -> report (the three side by
side, the target SDE's error budget), then a rerun in the same workdir that
must skip or resume every stage.

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
from PIL import Image

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
    # The baselines: same step count, their own workdirs, no teacher for
    # these rows, evaluated like the method.
    base = {}
    for name in ("target_only", "source_target"):
      base[name] = json.load(open(os.path.join(workdir, "stages",
                                               name + ".json")))
      self.assertEqual(base[name]["step"], steps)
      self.assertEqual(ckpt_lib.Checkpointer(
          os.path.join(workdir, name)).latest_step(), steps)
    self.assertEqual(config.target_only.ssda.row, "target_only")
    self.assertFalse(config.target_only.ssda.source)
    self.assertEqual(config.source_target.ssda.row, "baseline")
    report = open(os.path.join(workdir, "report.md")).read()
    # The mIoU table: three rows, the method with its differences (its
    # own numbers, the baselines' from their stages).
    lines = report.splitlines()
    header = next(l for l in lines if l.startswith("| | miou |"))
    self.assertIn("Δ mIoU vs target only", header)
    self.assertIn("Δ mIoU vs source + target", header)
    full = next(l for l in lines if l.startswith("| SSDA full |"))
    d = rec["miou"] - base["target_only"]["miou"]
    self.assertIn(f"{d:+.1f}", full.split("|")[-3])
    for name in ("| target only |", "| source + target |"):
      self.assertLen([l for l in lines if l.startswith(name)], 1)
    # The per-class comparison: one row per class and the mIoU.
    self.assertIn("| class | target only | source + target | SSDA full | "
                  "Δ vs target only | Δ vs source + target |", report)
    road = next(l for l in lines if l.startswith("| Road | "))
    self.assertLen(road.split("|"), 8)  # 3 runs + 2 differences
    self.assertIn("| Method | Road |", report)   # per-class table
    self.assertIn("abs_rel", report)            # depth metrics
    # The target SDE's error budget, by distance and row band.
    self.assertIn("Target SDE: error budget", report)
    self.assertIn("| distance | abs_rel | d<1.25 | error share |", report)
    self.assertIn("| rows 1/4 |", report)
    # Val images are full size, the mixes training crops (square, the
    # image height): each upscaled by the least integer that makes a tile
    # at least 256 px wide.
    width = config.minicity.target.width
    crop = config.minicity.target.height
    n = config.report.num_images
    for png, tiles, tile in (("predictions.png", 5, width),
                             ("depthmix.png", 6, crop)):
      path = os.path.join(workdir, "report_images", png)
      self.assertIn(f"report_images/{png}", report)
      scale = -(-256 // tile)
      self.assertEqual(Image.open(path).size,
                       (tiles * tile * scale, n * crop * scale))
    self.assertEqual(
        ckpt_lib.Checkpointer(os.path.join(workdir, "ssda")).latest_step(),
        steps)

    # Rerun: everything is skipped.
    logs2 = []
    demo.run(config, workdir, log=logs2.append)
    text2 = "\n".join(logs2)
    for name in ("sde_target", "sde_source", "export_target",
                 "export_source", "target_only", "source_target", "ssda"):
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
