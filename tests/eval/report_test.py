"""The report's comparison table and panels (numpy only, no model)."""

import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from sdeseg_jax import report


def _record(iou, miou):
  return {"iou": iou, "miou": miou}


class ComparisonTableTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    nan = None
    # Three classes; class 2 undefined for the first baseline.
    self.seg = {
        "a": _record([0.50, 0.10, nan], 30.0),
        "b": _record([0.40, 0.20, 0.30], 30.0),
        "m": _record([0.55, 0.15, 0.25], 31.5),
    }

  def test_rows_columns_and_differences(self):
    text = report.comparison_table(self.seg, ["a", "b"],
                                   class_names=("x", "y", "z"))
    lines = text.splitlines()
    self.assertEqual(lines[0], "| class | a | b | m | Δ vs a | Δ vs b |")
    self.assertEqual(lines[2], "| x | 50.0 | 40.0 | 55.0 | +5.0 | +15.0 |")
    self.assertEqual(lines[3], "| y | 10.0 | 20.0 | 15.0 | +5.0 | -5.0 |")
    self.assertEqual(lines[4], "| z | - | 30.0 | 25.0 | - | -5.0 |")
    # The mIoU row uses the records' miou, not a mean of the rows.
    self.assertEqual(lines[5],
                     "| **mIoU** | 30.0 | 30.0 | 31.5 | +1.5 | +1.5 |")

  def test_unknown_baseline_is_named(self):
    with self.assertRaisesRegex(ValueError, r"\['c'\]"):
      report.comparison_table(self.seg, ["c"], class_names=("x", "y", "z"))
    with self.assertRaisesRegex(ValueError, "before the method"):
      report.comparison_table(self.seg, ["m"], class_names=("x", "y", "z"))

  def test_write_report_adds_delta_columns_and_budget(self):
    workdir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
    seg = {k: dict(v, iou=list(v["iou"]) + [None] * 16)
           for k, v in self.seg.items()}
    text = report.write_report(workdir, title="t", seg=seg,
                               baselines=["a", "b"],
                               depth={"sde": {"abs_rel": 0.25}},
                               depth_budget="BUDGET TABLE")
    self.assertIn("| | miou | Δ mIoU vs a | Δ mIoU vs b |", text)
    self.assertIn("| m | 31.500 | +1.5 | +1.5 |", text)
    self.assertIn("| a | 30.000 | - | - |", text)
    self.assertIn("| Road | 50.0 | 40.0 | 55.0 | +5.0 | +15.0 |", text)
    self.assertLess(text.index("abs_rel"), text.index("BUDGET TABLE"))


class PanelsTest(absltest.TestCase):

  def test_several_predictions_and_upscaling(self):
    b, h, w = 2, 4, 8
    images = np.zeros((b, h, w, 3), np.uint8)
    preds = [np.full((b, h, w), k) for k in (0, 1, 2)]
    label = np.full((b, h, w), 250)
    panels = report.prediction_panels(images, preds, label, num=1)
    self.assertEqual(panels.shape, (1, h, 5 * w, 3))
    # Tiles in order: image, the three predictions, ground truth.
    road, sidewalk = panels[0, 0, w], panels[0, 0, 2 * w]
    self.assertFalse(np.array_equal(road, sidewalk))
    np.testing.assert_array_equal(panels[0, 0, 4 * w], 0)  # ignore = black
    # A single prediction array still works.
    self.assertEqual(report.prediction_panels(images, preds[0], label)
                     .shape, (b, h, 3 * w, 3))
    out = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, out, ignore_errors=True)
    path = report.save_png(os.path.join(out, "p.png"), panels, scale=3)
    img = np.asarray(Image.open(path))
    self.assertEqual(img.shape, (3 * h, 15 * w, 3))
    np.testing.assert_array_equal(img[::3, ::3], panels[0])
    with self.assertRaisesRegex(ValueError, "scale=0"):
      report.save_png(path, panels, scale=0)


if __name__ == "__main__":
  absltest.main()
