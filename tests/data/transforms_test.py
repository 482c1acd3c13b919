"""Tests of the per-sample transforms (sdeseg_jax/data/transforms.py)."""

import io

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from sdeseg_jax.data import pipeline
from sdeseg_jax.data import transforms

# Cityscapes normalised intrinsics of the reference's ssda branch.
_CS = (2262.52 / 2048, 2265.30179 / 1024, 1096.98 / 2048, 513.137 / 1024)


def _png(a):
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG")
  return buf.getvalue()


class IntrinsicsTest(parameterized.TestCase):

  def test_ssda_matches_reference_numbers(self):
    # Reference values at scale 0: fx=1131.26, fy=1132.65, cx=548.49-x1,
    # cy=256.57.
    k = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 100, 0,
                                     False, "ssda")
    np.testing.assert_allclose(
        k[:2, :3], [[1131.26, 0, 548.49 - 100], [0, 1132.65, 256.5685]],
        atol=0.01)
    kf = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 100,
                                      0, True, "ssda")
    self.assertAlmostEqual(kf[0, 2], 1024 - 548.49 - 100, delta=0.01)
    self.assertAlmostEqual(kf[1, 2], k[1, 2], places=4)

  def test_master_compat_is_unscaled_and_flips_cy(self):
    k = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 7, 0,
                                     True, "master_compat")
    np.testing.assert_allclose(
        k[:2, :3], [[2262.52, 0, 951.02 - 7], [0, 2265.30179, 510.863]],
        atol=1e-3)

  def test_exact_differs_from_ssda_by_at_most_one_pixel(self):
    for flip in (False, True):
      a = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 3, 0,
                                       flip, "ssda")
      b = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 3, 0,
                                       flip, "exact")
      self.assertLessEqual(np.abs(a - b).max(), 1.0)
      np.testing.assert_allclose(a[0, 0], b[0, 0])

  def test_inverse(self):
    k = transforms.intrinsics_matrix(_CS, (2048, 1024), (1024, 512), 5, 0,
                                     False)
    np.testing.assert_allclose(transforms.inverse_intrinsics(k) @ k,
                               np.eye(4), atol=1e-6)

  def test_unknown_mode(self):
    with self.assertRaisesRegex(ValueError, "intrinsics_mode"):
      transforms.intrinsics_matrix(_CS, (2, 1), (2, 1), 0, 0, False, "x")


class ColorAndPyramidTest(absltest.TestCase):

  def test_jitter_params_ranges_and_determinism(self):
    p1 = transforms.color_jitter_params(np.random.default_rng(3))
    p2 = transforms.color_jitter_params(np.random.default_rng(3))
    self.assertEqual(p1, p2)
    self.assertCountEqual([n for n, _ in p1],
                          ["brightness", "contrast", "saturation", "hue"])
    for name, f in p1:
      lo, hi = (-0.1, 0.1) if name == "hue" else (0.8, 1.2)
      self.assertTrue(lo <= f <= hi, (name, f))

  def test_brightness_only_scales(self):
    img = Image.fromarray(np.full((4, 4, 3), 100, np.uint8))
    out = np.asarray(transforms.apply_color_jitter(img, [("brightness", 1.2)]))
    np.testing.assert_array_equal(out, 120)

  def test_hue_wraps_like_uint8(self):
    # Pure red has hue 0; a negative shift wraps to the top of the circle
    # (magenta-ish), i.e. blue grows and green stays 0.
    img = Image.fromarray(np.array([[[255, 0, 0]]], np.uint8))
    out = np.asarray(transforms.apply_color_jitter(img, [("hue", -0.1)]))
    self.assertEqual(out[0, 0, 0], 255)
    self.assertEqual(out[0, 0, 1], 0)
    self.assertGreater(out[0, 0, 2], 100)

  def test_pyramid_is_cascaded(self):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 64, 3), np.uint8))
    pyr = transforms.lanczos_pyramid(img, 4)
    self.assertEqual([pyr[k].shape for k in ("s1", "s2", "s3")],
                     [(16, 32, 3), (8, 16, 3), (4, 8, 3)])
    s2 = np.asarray(Image.fromarray(pyr["s1"]).resize((16, 8),
                                                      Image.LANCZOS))
    np.testing.assert_array_equal(pyr["s2"], s2)


class ProcessSampleTest(absltest.TestCase):

  def _element(self):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (16, 32, 3), np.uint8) for _ in range(3)]
    # A column ramp: unique per column, so the crop and flip are recoverable.
    lbl = np.arange(32, dtype=np.uint8)[None].repeat(16, 0)
    return {
        "frames": [_png(f) for f in frames], "label": _png(lbl),
        "depth": b"", "depth_unit": np.float32(0),
        "intrinsics": np.asarray([1, 2, 0.5, 0.5], np.float32),
        "full_size": np.asarray([32, 16], np.int32),
        "image_size": np.asarray([32, 16], np.int32),
        "index": np.int32(5), "relpath": b"a/b.png",
        "camera_height": np.float32(np.nan), "camera_pitch": np.float32(0),
        "is_labeled": True}, frames, lbl

  def test_flip_crop_consistency(self):
    el, frames, lbl = self._element()
    proc = transforms.ProcessSample(
        image_size=(16, 32), crop_size=(16, 16), train=True, flip_prob=0.5,
        color_aug=True, intrinsics_mode="ssda", num_scales=3,
        with_depth=True, pseudo_depth_dir="", pseudo_depth_encoding="u8")
    seen_flip = set()
    for seed in range(12):
      out = proc.random_map(dict(el), np.random.default_rng(seed))
      self.assertEqual(out["color"].shape, (3, 16, 16, 3))
      self.assertEqual(out["label"].dtype, np.int32)
      self.assertEqual(out["pyramid"]["s2"].shape, (4, 4, 3))
      # Recover the crop from the label (a column ramp) and check it
      # matches the image and K.
      row = out["label"][0]
      flip = bool(row[0] > row[1]) if row[0] != row[1] else None
      x_img = frames[1][:, ::-1] if flip else frames[1]
      src_cols = lbl[0, ::-1] if flip else lbl[0]
      x1 = int(np.flatnonzero(src_cols == row[0])[0])
      np.testing.assert_array_equal(out["color"][1], x_img[:, x1:x1 + 16])
      cx = (32 - 16 if flip else 16) - x1
      self.assertAlmostEqual(float(out["K"][0, 2]), cx, places=4)
      seen_flip.add(flip)
      self.assertEqual(int(out["index"]), 5)
      np.testing.assert_array_equal(out["depth"], 0)
    self.assertEqual(seen_flip, {True, False})

  def test_eval_is_identity(self):
    el, frames, lbl = self._element()
    proc = transforms.ProcessSample(
        image_size=(16, 32), crop_size=None, train=False, flip_prob=0.5,
        color_aug=True, intrinsics_mode="ssda", num_scales=1,
        with_depth=False, pseudo_depth_dir="", pseudo_depth_encoding="u8")
    out = proc.random_map(dict(el), np.random.default_rng(0))
    np.testing.assert_array_equal(out["color"], np.stack(frames))
    np.testing.assert_array_equal(out["color_aug"], out["color"])
    np.testing.assert_array_equal(out["label"], lbl)
    self.assertNotIn("pyramid", out)
    self.assertNotIn("depth", out)

  def test_keep_classes(self):
    el, _, lbl = self._element()
    proc = transforms.ProcessSample(
        image_size=(16, 32), crop_size=None, train=False, flip_prob=0,
        color_aug=False, intrinsics_mode="ssda", num_scales=1,
        with_depth=False, pseudo_depth_dir="", pseudo_depth_encoding="u8",
        keep_classes=(0, 3, 18))
    out = proc.random_map(el, np.random.default_rng(0))
    expect = np.where(np.isin(lbl, (0, 3, 18)), lbl, 250)
    np.testing.assert_array_equal(out["label"], expect)

  def test_unlabeled_gets_ignore(self):
    el, _, _ = self._element()
    el["is_labeled"] = False
    proc = transforms.ProcessSample(
        image_size=(16, 32), crop_size=None, train=False, flip_prob=0,
        color_aug=False, intrinsics_mode="ssda", num_scales=1,
        with_depth=False, pseudo_depth_dir="", pseudo_depth_encoding="u8")
    out = proc.random_map(el, np.random.default_rng(0))
    np.testing.assert_array_equal(out["label"], 250)
    self.assertFalse(out["is_labeled"])


class SubsetTest(absltest.TestCase):

  def test_reference_permutation(self):
    perm = np.random.RandomState(42).permutation(2975)
    np.testing.assert_array_equal(perm[:6], [2403, 2865, 2159, 507, 2462,
                                             1235])
    sub = pipeline.reference_subset(2975, 6, 42)
    np.testing.assert_array_equal(sub, sorted([2403, 2865, 2159, 507, 2462,
                                               1235]))
    np.testing.assert_array_equal(
        pipeline.reference_subset(2975, 3, 43), sorted([938, 884, 2730]))


if __name__ == "__main__":
  absltest.main()
