"""Ground-truth poses in the input pipeline (``with_pose`` streams).

One tiny MiniCity (cityscapes layout, 64x32, 2 train + 1 val sequences of
3 frames) is generated and prepared once for the module. Expected values
come straight from ``minicity.json``, not from the reader.
"""

import json
import os
import re
import shutil

from absl.testing import absltest
import jax
import numpy as np

from configs import common
from sdeseg_jax.data import builder
from sdeseg_jax.data import pipeline
from sdeseg_jax.data import readers
from sdeseg_jax.data.readers import DatasetError
from sdeseg_jax.geometry import warp
from tests import _fixtures

_TMP = None
_ROOT = None
_TFDS = None
_W, _H = 64, 32
_MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])


def setUpModule():
  global _TMP, _ROOT, _TFDS
  _TMP, _ROOT, _TFDS = _fixtures.generate_minicity(2, 1, width=_W,
                                                   height=_H)


def tearDownModule():
  shutil.rmtree(_TMP, ignore_errors=True)


def _stream(**kw):
  base = dict(path=_ROOT, frame_offsets=(-1, 0, 1), image_size=(_H, _W),
              crop_size=(), num_workers=0, with_depth=True, num_scales=1,
              with_pose=True, intrinsics_mode="exact", full_res=(_W, _H))
  base.update(kw)
  return common.stream_config("mc_pose", "cityscapes", **base)


def _batch(stream, *, split="train", train=False, bs=2, seed=0):
  loader = pipeline.make_loader(stream, split=split, global_batch_size=bs,
                                seed=seed, train=train,
                                data_dir=_TFDS)
  b = jax.tree.map(np.asarray, next(loader))
  loader.close()
  return b


def _sidecar_poses(split):
  """``{sample index: [T, 4, 4] camera-to-world}`` from minicity.json.

  Sample ``i`` of a split is its ``i``-th annotated frame in sorted path
  order; its neighbours are frames 18 and 20 of the same sequence.
  """
  with open(os.path.join(_ROOT, "minicity.json")) as f:
    side = json.load(f)
  frames = [r for r in side["frames"] if r["split"] == split]
  annotated = sorted((r for r in frames if r["annotated"]),
                     key=lambda r: os.path.join(_ROOT, r["annotated_image"]))
  out = {}
  for i, a in enumerate(annotated):
    by_frame = {r["frame"]: np.array(r["pose"]).reshape(4, 4)
                for r in frames if r["sequence"] == a["sequence"]}
    out[i] = np.stack([by_frame[a["frame"] + o] for o in (-1, 0, 1)])
  return out


def _expected(poses):
  """``inv(pose_f) @ pose_0`` for the sorted offsets (-1, 0, 1)."""
  return np.stack([np.linalg.inv(p) @ poses[1] for p in poses])


class PoseBatchTest(absltest.TestCase):

  def test_gt_cam_T_cam_equals_the_sidecar_poses(self):
    for split, n in (("train", 2), ("val", 1)):
      b = _batch(_stream(), split=split, bs=n)
      self.assertEqual(b["gt_cam_T_cam"].shape, (n, 3, 4, 4))
      self.assertEqual(b["gt_cam_T_cam"].dtype, np.float32)
      side = _sidecar_poses(split)
      for i, idx in enumerate(b["index"]):
        want = _expected(side[int(idx)])
        np.testing.assert_allclose(b["gt_cam_T_cam"][i], want, atol=2e-5)
        np.testing.assert_array_equal(b["gt_cam_T_cam"][i, 1], np.eye(4))
        # The camera moves between frames (else the test proves nothing).
        for t in (0, 2):
          self.assertGreater(np.linalg.norm(want[t, :3, 3]), 0.2)

  def test_flip_conjugates_and_crop_keeps_the_transform(self):
    side = _sidecar_poses("train")
    plain = _batch(_stream(flip_prob=0.0, crop_size=(_H, 48)), train=True,
                   seed=3)
    flipped = _batch(_stream(flip_prob=1.0, crop_size=(_H, 48)), train=True,
                     seed=3)
    # Same seed: same samples and crop windows, only the flip differs.
    np.testing.assert_array_equal(plain["index"], flipped["index"])
    self.assertFalse(np.array_equal(plain["color"], flipped["color"]))
    for i, idx in enumerate(plain["index"]):
      want = _expected(side[int(idx)])
      np.testing.assert_allclose(plain["gt_cam_T_cam"][i], want, atol=2e-5)
      np.testing.assert_allclose(flipped["gt_cam_T_cam"][i],
                                 _MIRROR @ want @ _MIRROR, atol=2e-5)
      # Mirroring changes the lateral components (not a no-op here).
      self.assertGreater(np.abs(flipped["gt_cam_T_cam"][i] - want).max(),
                         1e-4)

  def _warp_errors(self, b, t, transform):
    """Mean |warp(frame t) - centre| (0..255) over pixels landing inside."""
    color = b["color"].astype(np.float32)
    depth = b["depth"][..., None]
    d = np.where(depth > 0, depth, 1.0)  # sky: invalid, masked below
    pix = np.asarray(warp.project(warp.backproject(d, b["inv_K"]), b["K"],
                                  transform))
    h, w = depth.shape[1:3]
    ok = ((depth[..., 0] > 0) & (pix[..., 0] >= 0) & (pix[..., 0] <= w - 1)
          & (pix[..., 1] >= 0) & (pix[..., 1] <= h - 1))
    warped = np.asarray(warp.inverse_warp(color[:, t], d, transform,
                                          b["K"], b["inv_K"]))
    err = np.abs(warped - color[:, 1]).mean(-1)
    self.assertGreater(ok.mean(), 0.6)
    return float(err[ok].mean())

  def test_warping_with_gt_depth_and_pose_reproduces_the_centre(self):
    # The convention check against real renders: with the warp of the
    # photometric loss, the GT transform explains the neighbour far better
    # than no motion or the inverse transform; on flipped crops the
    # conjugated transform beats the unmirrored one.
    cases = {
        "eval": _batch(_stream(), bs=2),
        "flip_crop": _batch(_stream(flip_prob=1.0, crop_size=(_H, 48)),
                            train=True, seed=3),
    }
    eye = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    for name, b in cases.items():
      for t in (0, 2):
        gt = b["gt_cam_T_cam"][:, t]
        e_gt = self._warp_errors(b, t, gt)
        e_id = self._warp_errors(b, t, eye)
        e_inv = self._warp_errors(b, t, np.linalg.inv(gt))
        msg = f"{name} frame {t}: gt {e_gt:.2f} id {e_id:.2f} inv {e_inv:.2f}"
        self.assertLess(e_gt, 7.0, msg)  # of 255, at 64x32 with edges
        self.assertLess(e_gt, 0.75 * e_id, msg)
        self.assertLess(e_gt, 0.6 * e_inv, msg)
        if name == "flip_crop":
          e_unmirrored = self._warp_errors(b, t, _MIRROR @ gt @ _MIRROR)
          self.assertLess(e_gt, 0.92 * e_unmirrored, msg)

  def test_streams_without_pose_have_no_key_and_their_own_folder(self):
    b = _batch(_stream(with_pose=False))
    self.assertNotIn("gt_cam_T_cam", b)
    # A pose stream never reuses a folder prepared without poses.
    self.assertNotEqual(builder.config_name(_stream(with_pose=False)),
                        builder.config_name(_stream()))
    self.assertNotIn("with_pose",
                     builder.reader_settings(_stream(with_pose=False)))

  def test_missing_sidecar_names_the_file(self):
    root = os.path.join(_TMP, "no_sidecar")
    shutil.copytree(_ROOT, root)
    os.remove(os.path.join(root, "minicity.json"))
    expected = os.path.join(root, "minicity.json")
    with self.assertRaisesRegex(DatasetError, re.escape(expected)):
      readers.list_samples(_stream(path=root), "train")
    with self.assertRaisesRegex(DatasetError, "with_pose=True"):
      _batch(_stream(path=root))
    # Without poses the same folder is fine (camera JSON files).
    self.assertLen(readers.list_samples(_stream(path=root, with_pose=False),
                                        "train"), 2)


if __name__ == "__main__":
  absltest.main()
