"""The depth error budget (eval/depth.py DepthBreakdown) on hand-made maps."""

import os
import tempfile

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.data import labels
from sdeseg_jax.eval import depth
from sdeseg_jax.eval import evaluators
from sdeseg_jax.utils import sharding

ROAD, CAR = labels.CLASS_NAMES.index("road"), labels.CLASS_NAMES.index("car")


def _disp(d):
  """The sigmoid disparity that disp_to_depth (0.1..100 m) maps to ``d``."""
  return (1.0 / np.asarray(d, np.float64) - 0.01) / 9.99


def _rows(result, grouping):
  return {r["group"]: r for r in result[grouping]}


def _budget(gt, pred, lbl=None):
  b = depth.DepthBreakdown()
  for i, g in enumerate(gt):
    mask, gv, pv, _ = depth.valid_pixels(g, pred[i], median_scaling=True)
    b.add(mask, gv, pv, None if lbl is None else lbl[i])
  return b.result()


class DepthBreakdownTest(absltest.TestCase):

  def test_one_class_exact_other_twice_too_far(self):
    # 12 road pixels exact, 4 car pixels at twice the distance: both
    # medians are 10 m, so the scale is 1 and car holds all the error.
    gt = np.full((1, 4, 4), 10.0)
    lbl = np.full((1, 4, 4), ROAD)
    lbl[0, 3] = CAR
    pred = np.where(lbl == CAR, 20.0, 10.0)
    rows = _rows(_budget(gt, pred, lbl), "class")
    self.assertEqual(set(rows), {"road", "car", "all"})
    self.assertAlmostEqual(rows["car"]["abs_rel"], 1.0)
    self.assertEqual(rows["car"]["a1"], 0.0)
    self.assertAlmostEqual(rows["car"]["error_share"], 1.0)
    self.assertAlmostEqual(rows["car"]["pixel_share"], 0.25)
    self.assertEqual(rows["car"]["pixels"], 4)
    self.assertAlmostEqual(rows["road"]["abs_rel"], 0.0)
    self.assertEqual(rows["road"]["a1"], 1.0)
    self.assertAlmostEqual(rows["road"]["error_share"], 0.0)
    self.assertAlmostEqual(rows["all"]["abs_rel"], 0.25)
    self.assertAlmostEqual(rows["all"]["a1"], 0.75)

  def test_distance_and_row_bands_by_hand(self):
    # Rows of a 4x2 image at 5, 15, 30, 60 m; the prediction is exact but
    # for the 30 m row, predicted at 33 m (abs_rel 0.1, ratio 1.1 < 1.25).
    # Medians: gt (15+30)/2 = 22.5 and pred (15+33)/2 = 24 -> scale 0.9375.
    gt = np.repeat(np.array([5.0, 15.0, 30.0, 60.0])[:, None], 2, 1)[None]
    pred = gt.copy()
    pred[0, 2] = 33.0
    res = _budget(gt, pred)
    self.assertNotIn("class", res)  # no labels, no class rows
    s = 22.5 / 24.0
    err = np.abs(np.array([5.0, 15.0, 33.0, 60.0]) * s -
                 np.array([5.0, 15.0, 30.0, 60.0])) / np.array(
                     [5.0, 15.0, 30.0, 60.0])
    dist, rows = _rows(res, "distance"), _rows(res, "row")
    self.assertEqual(list(dist), ["0-10 m", "10-20 m", "20-40 m",
                                  "40-80 m", "all"])
    for i, name in enumerate(["0-10 m", "10-20 m", "20-40 m", "40-80 m"]):
      self.assertAlmostEqual(dist[name]["abs_rel"], err[i])
      self.assertAlmostEqual(dist[name]["error_share"], err[i] / err.sum())
      self.assertAlmostEqual(dist[name]["pixel_share"], 0.25)
      self.assertAlmostEqual(rows[f"rows {i + 1}/4"]["abs_rel"], err[i])
    self.assertAlmostEqual(dist["all"]["abs_rel"], err.mean())

  def test_shares_sum_to_one_and_match_pooled_errors(self):
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 90.0, (3, 12, 10))  # some beyond the 80 m cap
    gt[0, :2] = 0.0  # invalid
    pred = gt * rng.uniform(0.5, 2.0, gt.shape)
    lbl = rng.integers(0, 19, gt.shape)
    lbl[1, 5:] = labels.IGNORE_INDEX
    res = _budget(gt, pred, lbl)
    self.assertIn("void", _rows(res, "class"))
    errs = []
    for g, p in zip(gt, pred):
      _, gv, pv, _ = depth.valid_pixels(g, p, median_scaling=True)
      errs.append(np.abs(gv - pv) / gv)
    errs = np.concatenate(errs)
    for grouping in depth.GROUPINGS:
      groups = res[grouping][:-1]
      self.assertAlmostEqual(sum(r["error_share"] for r in groups), 1.0)
      self.assertAlmostEqual(sum(r["pixel_share"] for r in groups), 1.0)
      self.assertEqual(sum(r["pixels"] for r in groups), errs.size)
      self.assertAlmostEqual(res[grouping][-1]["abs_rel"], errs.mean())

  def test_median_scaling_is_per_image_before_grouping(self):
    # Image 2 is exact up to a factor 3, image 1 exact: after per-image
    # scaling every group is exact. One scale over both images would not be.
    gt = np.stack([np.full((2, 2), 4.0), np.full((2, 2), 8.0)])
    gt[:, 1] *= 2
    pred = gt * np.array([1.0, 3.0])[:, None, None]
    for grouping, rows in _budget(gt, pred).items():
      for r in rows:
        self.assertAlmostEqual(r["abs_rel"], 0.0, msg=(grouping, r))
        self.assertEqual(r["a1"], 1.0)


class AccumulateTest(absltest.TestCase):

  def _batches(self, n, per_batch, rng):
    gt = rng.uniform(2.0, 70.0, (n, 8, 6)).astype(np.float32)
    disp = _disp(gt * rng.uniform(0.6, 1.6, gt.shape))[..., None]
    lbl = rng.integers(0, 19, gt.shape)
    out = []
    for s in range(0, n, per_batch):
      out.append({"depth": gt[s:s + per_batch], "disp": disp[s:s + per_batch],
                  "label": lbl[s:s + per_batch],
                  "index": np.arange(s, s + per_batch)})
    return out

  def test_batch_by_batch_equals_all_at_once(self):
    rng = np.random.default_rng(1)
    whole = self._batches(6, 6, rng)
    rng = np.random.default_rng(1)
    split = self._batches(6, 2, rng)
    a = depth.accumulate(lambda b: {"disp": b["disp"]}, whole)
    b = depth.accumulate(lambda b: {"disp": b["disp"]}, split)
    self.assertEqual(len(split), 3)
    ra, rb = a.breakdown.result(), b.breakdown.result()
    self.assertEqual(set(ra), set(depth.GROUPINGS))
    for k in ra:
      self.assertEqual([r["group"] for r in ra[k]],
                       [r["group"] for r in rb[k]])
      for x, y in zip(ra[k], rb[k]):
        for m in ("abs_rel", "a1", "error_share", "pixel_share"):
          self.assertAlmostEqual(x[m], y[m], places=10)

  def test_padding_and_unlabeled_images_add_no_class_rows(self):
    gt = np.full((3, 4, 4), 10.0, np.float32)
    pred = np.full((3, 4, 4), 10.0)
    pred[1] = 20.0  # image 1: unlabeled, uniformly off -> exact once scaled
    pred[2, 0] = 20.0  # image 2: padding, its errors must not count
    batch = {"depth": gt, "label": np.full((3, 4, 4), CAR),
             "is_labeled": np.array([True, False, True]),
             "index": np.array([0, 1, -1])}
    acc = depth.accumulate(lambda b: {"disp": _disp(pred)[..., None]},
                           [batch])
    res = acc.breakdown.result()
    self.assertEqual(_rows(res, "class")["car"]["pixels"], 16)
    self.assertEqual(_rows(res, "distance")["all"]["pixels"], 32)
    self.assertAlmostEqual(_rows(res, "distance")["all"]["abs_rel"], 0.0,
                           places=5)
    del batch["label"]
    res = depth.accumulate(lambda b: {"disp": _disp(pred)[..., None]},
                           [batch]).breakdown.result()
    self.assertNotIn("class", res)

  def test_label_shape_mismatch_is_an_error(self):
    batch = {"depth": np.full((1, 4, 4), 10.0), "label": np.zeros((1, 2, 2))}
    with self.assertRaisesRegex(ValueError, "label"):
      depth.accumulate(lambda b: {"disp": _disp(b["depth"])}, [batch])


class DepthEvaluatorBudgetTest(absltest.TestCase):

  def test_record_and_table_have_the_budget(self):
    gt = np.full((4, 8, 8), 10.0, np.float32)
    lbl = np.full((4, 8, 8), ROAD, np.int32)
    lbl[:, 6:] = CAR
    pred = np.where(lbl == CAR, 20.0, 10.0)
    batch = {"color": np.zeros((4, 1, 8, 8, 3), np.uint8), "depth": gt,
             "label": lbl, "index": np.array([0, 1, 2, -1])}

    def predict(_, b):
      return {"disp": jnp.asarray(_disp(pred), jnp.float32)[..., None] +
                      0 * b["color"][:, 0, ..., :1]}

    workdir = tempfile.mkdtemp()
    ev = evaluators.DepthEvaluator(
        predict, lambda: iter([batch]), mesh=sharding.make_mesh(),
        workdir=workdir, min_depth=0.1, max_depth=100.0)
    ev.evaluate({"student": 0.0}, step=5)
    rec = evaluators.read_latest(workdir, "depth")
    car = _rows(rec["breakdown"]["student"], "class")["car"]
    self.assertAlmostEqual(car["abs_rel"], 1.0, places=5)
    self.assertAlmostEqual(car["error_share"], 1.0, places=4)
    self.assertEqual(car["pixels"], 3 * 16)  # the padded image is left out
    with open(os.path.join(workdir, "eval", "depth", "step_5.md")) as f:
      table = f.read()
    self.assertIn("| car | 1.0000 | 0.0000 | 100.0 % | 25.0 % |", table)
    self.assertIn("| rows 4/4 |", table)


if __name__ == "__main__":
  absltest.main()
