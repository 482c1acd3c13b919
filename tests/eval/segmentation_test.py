"""Tests of the confusion-matrix mIoU, label protocols and IoU tables."""

import os
import tempfile

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sdeseg_jax.eval import segmentation
from sdeseg_jax.eval import tables

# Cityscapes label ids of train ids 0..18 (the reference's order).
_VALID_IDS = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26,
                       27, 28, 31, 32, 33])


def _label_ids_to_train_ids(ids):
  lut = np.full(256, 250, np.int32)
  lut[_VALID_IDS] = np.arange(19)
  return lut[ids]


class ConfusionTest(absltest.TestCase):

  def test_update_by_hand_ignores_out_of_range(self):
    labels = jnp.array([[0, 0, 1, 250], [2, 1, -1, 0]])
    preds = jnp.array([[0, 1, 1, 2], [2, 7, 0, 3]])  # 7, 3 out of range
    fn = jax.jit(chex.assert_max_traces(n=1)(segmentation.update_confusion))
    conf = fn(segmentation.init_confusion(3), labels, preds)
    conf = fn(conf, labels, preds)
    want = 2 * np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(conf, want)
    self.assertEqual(conf.dtype, jnp.uint32)

  def test_scores_match_running_score_formula(self):
    hist = np.array([[5, 1, 0, 0], [2, 3, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    s = segmentation.segmentation_scores(hist)
    np.testing.assert_allclose(s["iou"][:3], [5 / 8, 3 / 7, 0.0])
    self.assertTrue(np.isnan(s["iou"][3]))     # absent in GT and pred
    self.assertAlmostEqual(s["miou"], (5 / 8 + 3 / 7 + 0) / 3)
    self.assertAlmostEqual(s["overall_acc"], 8 / 12)
    self.assertAlmostEqual(s["mean_acc"], (5 / 6 + 3 / 5 + 0) / 3)
    self.assertAlmostEqual(s["fwiou"], 6 / 12 * 5 / 8 + 5 / 12 * 3 / 7)

  def test_synthia_subsets(self):
    iou = np.arange(19) / 100.0
    self.assertLen(segmentation.SYNTHIA_13_CLASSES, 13)
    self.assertLen(segmentation.SYNTHIA_16_CLASSES, 16)
    self.assertTrue(set(segmentation.SYNTHIA_13_CLASSES) <
                    set(segmentation.SYNTHIA_16_CLASSES))
    self.assertAlmostEqual(
        segmentation.subset_miou(iou, segmentation.SYNTHIA_13_CLASSES),
        np.mean(segmentation.SYNTHIA_13_CLASSES) / 100)
    with self.assertRaisesRegex(ValueError, "class ids"):
      segmentation.subset_miou(iou, [19])


class ProtocolTest(absltest.TestCase):

  def test_downsample_equals_odd_pixels_and_pil_nearest(self):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 34, (64, 128)).astype(np.uint8)
    np.testing.assert_array_equal(
        segmentation.downsample_label(lab, (32, 64)), lab[1::2, 1::2])
    for out_hw in ((32, 64), (16, 32), (16, 64), (64, 128)):
      pil = np.asarray(Image.fromarray(lab).resize(out_hw[::-1],
                                                   Image.NEAREST))
      np.testing.assert_array_equal(
          segmentation.downsample_label(lab, out_hw), pil)

  def test_upsample_align_corners_matches_torch(self):
    import torch  # pylint: disable=g-import-not-at-top
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype(np.float32)
    got = segmentation.resize_bilinear_align_corners(jnp.asarray(x), (9, 16))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(9, 16),
        mode="bilinear", align_corners=True).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    pred = segmentation.predict_labels(jnp.asarray(x), (9, 16))
    np.testing.assert_array_equal(pred, want.argmax(-1))
    conf = jax.jit(segmentation.update_from_logits)(
        segmentation.init_confusion(3), jnp.asarray(x),
        jnp.asarray(want.argmax(-1)))
    np.testing.assert_array_equal(np.diag(np.asarray(conf)).sum(), 2 * 9 * 16)
    with self.assertRaisesRegex(ValueError, "label size"):
      segmentation.update_from_logits(segmentation.init_confusion(3),
                                      jnp.asarray(x), jnp.zeros((2, 5, 16)))
    # Only one side differing keeps the size (reference quirk).
    self.assertEqual(segmentation.predict_labels(jnp.asarray(x),
                                                 (5, 16)).shape, (2, 5, 7))


class CityscapesScriptsParityTest(absltest.TestCase):

  def test_class_ious_equal_official_evaluation(self):
    # pylint: disable=g-import-not-at-top
    from cityscapesscripts.evaluation import (
        evalPixelLevelSemanticLabeling as cs)
    from cityscapesscripts.helpers import labels as cs_labels
    # pylint: enable=g-import-not-at-top
    rng = np.random.default_rng(0)
    all_ids = np.array(sorted(l.id for l in cs_labels.labels if l.id >= 0))
    conf = segmentation.init_confusion(19)
    gt_files, pred_files = [], []
    with tempfile.TemporaryDirectory() as tmp:
      for i in range(3):
        gt_ids = rng.choice(all_ids, size=(24, 40)).astype(np.uint8)
        gt_ids[:8] = 7                                  # plenty of road
        # Predictions: mostly right, some noise; never class 16 (train) so
        # that class is NaN in both when also absent from the GT.
        train = _label_ids_to_train_ids(gt_ids)
        pred = np.where(rng.uniform(size=train.shape) < 0.6, train,
                        rng.integers(0, 19, train.shape))
        pred = np.where((pred == 250) | (pred == 16), 13, pred)
        gt_ids[gt_ids == 31] = 0                        # remove GT "train"
        train = _label_ids_to_train_ids(gt_ids)
        gt_path = os.path.join(tmp, f"im{i}_gtFine_labelIds.png")
        pred_path = os.path.join(tmp, f"im{i}_pred.png")
        Image.fromarray(gt_ids).save(gt_path)
        Image.fromarray(_VALID_IDS[pred].astype(np.uint8)).save(pred_path)
        gt_files.append(gt_path)
        pred_files.append(pred_path)
        conf = segmentation.update_confusion(conf, jnp.asarray(train),
                                             jnp.asarray(pred))
      args = cs.args
      saved = {k: getattr(args, k) for k in (
          "evalInstLevelScore", "JSONOutput", "quiet", "evalPixelAccuracy")}
      try:
        args.evalInstLevelScore = False
        args.JSONOutput = False
        args.quiet = True
        args.evalPixelAccuracy = False
        result = cs.evaluateImgLists(pred_files, gt_files, args)
      finally:
        for k, v in saved.items():
          setattr(args, k, v)
    ours = segmentation.segmentation_scores(conf)
    official = result["classScores"]
    for train_id, label_id in enumerate(_VALID_IDS):
      name = cs_labels.id2label[int(label_id)].name
      if np.isnan(official[name]):
        self.assertTrue(np.isnan(ours["iou"][train_id]), name)
      else:
        self.assertAlmostEqual(ours["iou"][train_id], official[name],
                               delta=1e-6, msg=name)
    self.assertTrue(np.isnan(ours["iou"][16]))
    self.assertAlmostEqual(ours["miou"], result["averageScoreClasses"],
                           delta=1e-6)


class TablesTest(absltest.TestCase):

  def test_markdown_and_plain(self):
    iou = np.full(19, 0.5)
    iou[3] = np.nan
    iou[0] = 0.9751
    md = tables.format_iou_table({"Ours": iou},
                                 class_ids=segmentation.SYNTHIA_16_CLASSES)
    lines = md.splitlines()
    self.assertLen(lines, 3)
    self.assertEqual(lines[0].count("|"), 16 + 3)
    self.assertIn("| Ours | 97.5 | 50.0 | 50.0 | - |", lines[2])
    want_miou = (0.9751 + 14 * 0.5) / 15 * 100
    self.assertTrue(lines[2].endswith(f"| {want_miou:.1f} |"))
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "sub", "table.txt")
      text = tables.write_iou_table(path, {"A": iou, "Baseline": iou * 0},
                                    fmt="plain")
      with open(path) as f:
        self.assertEqual(f.read(), text)
    self.assertEqual(len({len(l) for l in text.splitlines()}), 1)
    self.assertIn("Bike", text.splitlines()[0])
    with self.assertRaisesRegex(ValueError, "shape"):
      tables.format_iou_table({"ok": np.zeros(19), "bad": np.zeros(5)})


if __name__ == "__main__":
  absltest.main()
