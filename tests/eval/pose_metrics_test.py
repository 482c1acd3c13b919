"""Pose errors of the depth evaluation on hand-made transforms."""

from absl.testing import absltest
import numpy as np

from sdeseg_jax.eval import depth


def _rot_y(deg):
  a = np.radians(deg)
  return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0],
                   [-np.sin(a), 0, np.cos(a)]])


def _cam_T_cam(rot, centre):
  """Centre->neighbour transform of a neighbour camera at ``centre`` (in
  centre-camera coordinates) rotated by ``rot`` (neighbour-to-centre)."""
  pose = np.eye(4)  # neighbour camera -> centre camera
  pose[:3, :3], pose[:3, 3] = rot, centre
  return np.linalg.inv(pose)


class PoseErrorsTest(absltest.TestCase):

  def test_perfect_pose_has_zero_error(self):
    gt = _cam_T_cam(_rot_y(3.0), [0.1, -0.02, 0.8])
    # float32, as the pose net delivers it.
    e = depth.pose_errors(gt, gt.astype(np.float32))
    self.assertAlmostEqual(e["pose_ate"], 0.0, places=6)
    self.assertLess(e["pose_trans_angle_deg"], 1e-3)
    self.assertLess(e["pose_rot_deg"], 1e-3)
    # Scale does not matter for ATE and direction (monocular ambiguity).
    small = _cam_T_cam(_rot_y(3.0), [0.01, -0.002, 0.08])
    e = depth.pose_errors(gt, small)
    self.assertAlmostEqual(e["pose_ate"], 0.0, places=6)
    self.assertAlmostEqual(e["pose_trans_angle_deg"], 0.0, places=4)

  def test_known_direction_and_rotation_errors(self):
    gt = _cam_T_cam(_rot_y(2.0), [0.0, 0.0, 1.0])     # forward
    side = _cam_T_cam(_rot_y(2.0), [0.5, 0.0, 0.0])   # sideways
    e = depth.pose_errors(gt, side)
    self.assertAlmostEqual(e["pose_trans_angle_deg"], 90.0, places=6)
    self.assertAlmostEqual(e["pose_rot_deg"], 0.0, places=6)
    # Orthogonal: best scale 0, so |gt| / sqrt(2 frames).
    self.assertAlmostEqual(e["pose_ate"], np.sqrt(0.5), places=6)
    back = _cam_T_cam(_rot_y(12.0), [0.0, 0.0, -3.0])
    e = depth.pose_errors(gt, back)
    self.assertAlmostEqual(e["pose_trans_angle_deg"], 180.0, places=6)
    self.assertAlmostEqual(e["pose_rot_deg"], 10.0, places=6)
    # 45 degrees between the motions, a small rotation error about x.
    rx = np.array([[1, 0, 0], [0, np.cos(0.01), -np.sin(0.01)],
                   [0, np.sin(0.01), np.cos(0.01)]])
    e = depth.pose_errors(gt, _cam_T_cam(_rot_y(2.0) @ rx, [1.0, 0.0, 1.0]))
    self.assertAlmostEqual(e["pose_trans_angle_deg"], 45.0, places=6)
    self.assertAlmostEqual(e["pose_rot_deg"], np.degrees(0.01), places=6)

  def test_no_motion_has_no_direction(self):
    gt = _cam_T_cam(np.eye(3), [0.0, 0.0, 1.0])
    e = depth.pose_errors(gt, np.eye(4))
    self.assertTrue(np.isnan(e["pose_trans_angle_deg"]))
    acc = depth.DepthAccumulator()
    acc.add_poses(np.stack([gt, gt]),
                  np.stack([np.eye(4), _cam_T_cam(np.eye(3), [1., 0, 0])]))
    r = acc.result()
    # Both snippets count for ATE, only the moving one for the angle.
    self.assertEqual(r["num_pose_snippets"], 2)
    self.assertAlmostEqual(r["pose_trans_angle_deg"], 90.0, places=6)
    # A diverged (NaN) prediction is not silently dropped.
    acc.add_poses(gt[None], np.full((1, 4, 4), np.nan))
    self.assertTrue(np.isnan(acc.result()["pose_ate"]))


def _batch(gt_T, index):
  b = len(index)
  return {"depth": np.full((b, 4, 6), 5.0, np.float32),
          "index": np.asarray(index, np.int32),
          "gt_cam_T_cam": np.asarray(gt_T, np.float32)}


class EvaluateTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # Sorted offsets (-1, 0, 1): frame -1 behind, frame +1 ahead.
    self.prev = _cam_T_cam(_rot_y(-1.0), [0.0, 0.0, -1.0])
    self.next = _cam_T_cam(_rot_y(1.0), [0.0, 0.0, 1.0])
    self.gt = np.stack([self.prev, np.eye(4), self.next])
    # Disparity giving depth 5 m (pred range 0.1..100 m).
    self.disp = np.full((1, 2, 3, 1), (1 / 5 - 0.01) / 9.99, np.float32)

  def _predict(self, cam_T_cam, offsets=True):
    def fn(batch):
      b = batch["depth"].shape[0]
      out = {"disp": np.repeat(self.disp, b, 0),
             "cam_T_cam": {f: np.repeat(t[None], b, 0).astype(np.float32)
                           for f, t in cam_T_cam.items()}}
      if offsets:
        out["offsets"] = (-1, 0, 1)
      return out
    return fn

  def test_perfect_and_wrong_poses(self):
    # Sample 1 is padding with a garbage pose: it must not count.
    gt = np.stack([self.gt, np.zeros((3, 4, 4))])
    batches = [_batch(gt, [0, -1]), _batch(self.gt[None], [1])]
    r = depth.evaluate(self._predict({-1: self.prev, 1: self.next}),
                       batches)
    self.assertEqual(r["num_pose_snippets"], 4)
    self.assertAlmostEqual(r["pose_ate"], 0.0, places=6)
    self.assertLess(r["pose_trans_angle_deg"], 1e-3)
    self.assertLess(r["pose_rot_deg"], 1e-3)
    self.assertAlmostEqual(r["abs_rel"], 0.0, places=4)
    # A sideways +1 frame: 90 degrees on half of the snippets; the offsets
    # are read from cam_T_cam's keys when the prediction does not name them.
    side = _cam_T_cam(_rot_y(1.0), [2.0, 0.0, 0.0])
    r = depth.evaluate(self._predict({-1: self.prev, 1: side},
                                     offsets=False), batches)
    self.assertAlmostEqual(r["pose_trans_angle_deg"], 45.0, places=4)
    self.assertLess(r["pose_rot_deg"], 1e-3)
    self.assertAlmostEqual(r["pose_ate"], np.sqrt(0.5) / 2, places=5)

  def test_depth_keys_unchanged_without_poses(self):
    no_pose = _batch(self.gt[None], [0])
    del no_pose["gt_cam_T_cam"]
    r = depth.evaluate(self._predict({-1: self.prev, 1: self.next}),
                       [no_pose])
    expect = set(depth.METRICS) | {m + "_noscale" for m in depth.METRICS}
    expect |= {"median_scale", "num_images"}
    self.assertEqual(set(r), expect)

  def test_frame_count_mismatch_is_an_error(self):
    batch = _batch(self.gt[None, :2], [0])
    with self.assertRaisesRegex(ValueError, r"expected \[B, 3, 4, 4\]"):
      depth.evaluate(self._predict({-1: self.prev, 1: self.next}), [batch])


if __name__ == "__main__":
  absltest.main()
