"""Depth metrics checked against hand-computed values."""

from absl.testing import absltest
import numpy as np

from sdeseg_jax.eval import depth


class DepthMetricsTest(absltest.TestCase):

  def test_errors_by_hand(self):
    gt = np.array([2.0, 4.0])
    pred = np.array([1.0, 5.0])
    m = depth.depth_errors(gt, pred)
    # |2-1|/2 = .5, |4-5|/4 = .25
    self.assertAlmostEqual(m["abs_rel"], 0.375)
    # 1/2, 1/4
    self.assertAlmostEqual(m["sq_rel"], 0.375)
    self.assertAlmostEqual(m["rmse"], 1.0)
    self.assertAlmostEqual(
        m["rmse_log"], np.sqrt((np.log(2) ** 2 + np.log(0.8) ** 2) / 2))
    # ratios 2 and 1.25: 1.25 < 1.25 is False; 1.25 < 1.5625 True.
    self.assertEqual(m["a1"], 0.0)
    self.assertEqual(m["a2"], 0.5)
    self.assertEqual(m["a3"], 0.5)

  def test_median_scaling_mask_and_clipping(self):
    gt = np.array([[0.0, 2.0, 4.0, 100.0]])  # 0 and 100 m are invalid
    pred = np.array([[7.0, 1.0, 2.0, 3.0]])
    scaled = depth.image_metrics(gt, pred, median_scaling=True)
    # median(gt)=3, median(pred)=1.5 -> x2 -> exact.
    self.assertAlmostEqual(scaled["scale"], 2.0)
    self.assertAlmostEqual(scaled["abs_rel"], 0.0)
    self.assertEqual(scaled["a1"], 1.0)
    raw = depth.image_metrics(gt, pred, median_scaling=False)
    self.assertAlmostEqual(raw["abs_rel"], 0.5)
    # Predictions are clipped to [1e-3, 80] after scaling.
    far = depth.image_metrics(np.array([[50.0]]), np.array([[500.0]]),
                              median_scaling=False)
    self.assertAlmostEqual(far["abs_rel"], 30 / 50)
    self.assertIsNone(depth.image_metrics(gt * 0, pred,
                                          median_scaling=True))

  def test_accumulator_averages_images_and_reads_disparity(self):
    acc = depth.DepthAccumulator(pred_min_depth=0.1, pred_max_depth=100.0)
    # disp -> depth: 1 / (0.01 + 9.99 d); choose d so depth = 2 and 4.
    d2 = (1 / 2 - 0.01) / 9.99
    d4 = (1 / 4 - 0.01) / 9.99
    gt = np.stack([np.full((4, 4), 2.0), np.full((4, 4), 8.0)])
    disp = np.stack([np.full((2, 2), d2), np.full((2, 2), d4)])[..., None]
    acc.add_disparities(gt, disp)
    acc.add_disparities(np.zeros((1, 4, 4)), disp[:1])  # padding: skipped
    r = acc.result()
    self.assertEqual(r["num_images"], 2)
    self.assertAlmostEqual(r["abs_rel"], 0.0, places=5)
    # Unscaled: image 1 exact, image 2 predicts 4 m for 8 m (0.5).
    self.assertAlmostEqual(r["abs_rel_noscale"], 0.25, places=5)
    self.assertAlmostEqual(r["median_scale"], 1.5, places=4)

  def test_pose_ate_is_scale_invariant(self):
    def cam_t_cam(t):
      T = np.eye(4)
      T[:3, 3] = t
      return T
    gt = cam_t_cam([0.0, 0.0, -1.0])
    self.assertAlmostEqual(depth.snippet_ate(gt, cam_t_cam([0, 0, -0.1])),
                           0.0)
    # Orthogonal prediction: best scale 0, error = |gt| / sqrt(2 frames).
    self.assertAlmostEqual(depth.snippet_ate(gt, cam_t_cam([1.0, 0, 0])),
                           np.sqrt(0.5))

  def test_panels_shape(self):
    img = np.zeros((3, 8, 16, 3), np.uint8)
    p = depth.panels(img, np.random.rand(3, 4, 8), np.ones((3, 8, 16)), 2)
    self.assertEqual(p.shape, (2, 8, 48, 3))
    self.assertEqual(p.dtype, np.uint8)


if __name__ == "__main__":
  absltest.main()
