"""Tests of the MiniCity generator (sdeseg_jax/data/minicity/)."""

import contextlib
import io
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from configs import common
from sdeseg_jax.data import labels as L
from sdeseg_jax.data import minicity as mc

_VALID_IDS = {l.id for l in L.LABELS if l.id >= 0}
_TMP = None
_CACHE = {}


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory()


def tearDownModule():
  _TMP.cleanup()


def _dataset(layout, seed=0, width=64, height=32, train=2, val=1, frames=3,
             tag="", workers=1):
  """Generates (once per module) and returns (root, sidecar)."""
  key = (layout, seed, width, height, train, val, frames, tag, workers)
  if key not in _CACHE:
    root = os.path.join(_TMP.name, "_".join(map(str, key)))
    side = mc.generate(root, layout, seed, width=width, height=height,
                       num_train_sequences=train, num_val_sequences=val,
                       frames_per_sequence=frames, workers=workers,
                       log=None)
    _CACHE[key] = (root, side)
  return _CACHE[key]


def _read(root, rel):
  with Image.open(os.path.join(root, rel)) as im:
    return im.mode, np.array(im)


def _tree(root):
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = fh.read()
  return out


class LayoutTest(parameterized.TestCase):

  def test_cityscapes_files(self):
    root, side = _dataset("cityscapes")
    stem = "train/aachen/aachen_000000_000019"
    for rel, mode, dtype in (
        (f"leftImg8bit/{stem}_leftImg8bit.png", "RGB", np.uint8),
        (f"gtFine/{stem}_gtFine_labelIds.png", "L", np.uint8),
        (f"gtFine/{stem}_gtFine_color.png", "RGBA", np.uint8),
        (f"disparity/{stem}_disparity.png", "I;16", np.uint16),
        (f"disparity_sequence/{stem}_disparity.png", "I;16", np.uint16),
        ("depth/leftImg8bit_sequence/train/bremen/"
         "bremen_000000_000020_leftImg8bit.png", "I;16", np.uint16)):
      m, a = _read(root, rel)
      self.assertEqual((m, a.dtype), (mode, dtype), rel)
      self.assertEqual(a.shape[:2], (32, 64), rel)
    for f in (18, 19, 20):
      self.assertTrue(os.path.isfile(os.path.join(
          root, "leftImg8bit_sequence/val/frankfurt/"
          f"frankfurt_000000_{f:06d}_leftImg8bit.png")))
    # Only the annotated frame is in leftImg8bit / gtFine.
    self.assertFalse(os.path.exists(os.path.join(
        root, f"leftImg8bit/{stem[:-2]}18_leftImg8bit.png")))
    with open(os.path.join(root, f"camera/{stem}_camera.json")) as f:
      cam = json.load(f)
    self.assertEqual(set(cam["extrinsic"]),
                     {"baseline", "pitch", "roll", "yaw", "x", "y", "z"})
    self.assertEqual(set(cam["intrinsic"]), {"fx", "fy", "u0", "v0"})
    self.assertAlmostEqual(cam["intrinsic"]["fx"], 1131.26 / 16, places=3)
    self.assertAlmostEqual(cam["extrinsic"]["baseline"], 0.209313)
    frame = next(r for r in side["frames"] if r["annotated"])
    self.assertAlmostEqual(cam["extrinsic"]["z"], frame["camera_height"])

  def test_gta5_files(self):
    root, side = _dataset("gta5")
    m, lab = _read(root, "labels/00003.png")
    self.assertEqual(m, "P")
    with Image.open(os.path.join(root, "labels/00003.png")) as im:
      pal = np.array(im.getpalette()[:768], np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(pal, L.LABEL_ID_PALETTE)
    self.assertTrue(set(np.unique(lab)) <= _VALID_IDS)
    self.assertEqual(_read(root, "images/00001.png")[0], "RGB")
    self.assertFalse(os.path.exists(os.path.join(root, "images/00004.png")))
    for f in (19, 20, 21):
      self.assertTrue(os.path.isfile(os.path.join(
          root, f"sequences/train/img/001/001_{f:05d}.png")))
    self.assertTrue(os.path.isfile(os.path.join(
        root, "sequences/val/img/000/000_00020.png")))
    # The val sequence's annotated frame is the last image id.
    val = [r for r in side["frames"] if r["split"] == "val" and r["annotated"]]
    self.assertEqual(val[0]["annotated_image"], "images/00003.png")

  def test_synthia_files(self):
    root, side = _dataset("synthia")
    m, lab = _read(root, "synthia_mapped_to_cityscapes/0000002.png")
    self.assertEqual((m, lab.dtype), ("L", np.uint8))
    self.assertTrue(set(np.unique(lab)) <= set(range(23)))
    train = L.synthia_to_train_ids(lab)
    self.assertGreater((train != 250).mean(), 0.9)
    self.assertTrue(os.path.isfile(os.path.join(root, "RGB/0000000.png")))
    for f in (19, 20, 21):
      self.assertTrue(os.path.isfile(os.path.join(
          root, f"video/002/{f:06d}.png")))
    self.assertEqual(side["intrinsics"]["fx"],
                     532.740352 / 1280 * 64)

  @parameterized.parameters("cityscapes", "gta5", "synthia")
  def test_sidecar_is_consistent_with_files(self, layout):
    root, side = _dataset(layout)
    self.assertEqual(side, mc.load_sidecar(root))
    self.assertLen(side["frames"], 3 * 3)
    self.assertEqual([r["frame"] for r in side["frames"][:3]], [18, 19, 20])
    for r in side["frames"]:
      for key in ("image", "depth", "annotated_image", "label", "disparity",
                  "camera_json"):
        if r[key]:
          self.assertTrue(os.path.isfile(os.path.join(root, r[key])), r[key])
      self.assertEqual(r["annotated"], r["frame"] == 19)
      self.assertEqual(r["label"] is not None, r["annotated"])
      pose = np.array(r["pose"]).reshape(4, 4)
      np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3),
                                 atol=1e-9)
      self.assertAlmostEqual(np.linalg.det(pose[:3, :3]), 1.0)
      self.assertAlmostEqual(pose[1, 3], r["camera_height"])

  def test_cityscapes_label_ids_are_valid(self):
    root, side = _dataset("cityscapes")
    for r in side["frames"]:
      if r["label"]:
        _, lab = _read(root, r["label"])
        self.assertTrue(set(np.unique(lab)) <= _VALID_IDS, r["label"])

  def test_sidecar_intrinsics(self):
    _, side = _dataset("cityscapes")
    k = side["intrinsics"]
    np.testing.assert_allclose(
        [k["fx"], k["fy"], k["cx"], k["cy"]],
        [1131.26 / 16, 1132.65 / 16, 548.49 / 16, 256.57 / 16])
    _, side = _dataset("gta5")
    np.testing.assert_allclose(side["intrinsics"]["fy"], 2.144507 * 32)


class ContentTest(absltest.TestCase):

  def test_all_classes_appear_and_rare_classes_are_rare(self):
    _, side = _dataset("cityscapes", seed=3, width=128, height=64, train=30,
                       val=0, frames=1)
    st = side["stats"]
    ff = dict(zip(st["class_names"], st["frame_frequency"]))
    missing = [n for n, f in ff.items() if f == 0]
    self.assertEqual(missing, [])
    for name in ("train", "bus", "truck", "motorcycle", "rider"):
      self.assertLess(ff[name], 0.5, name)
    for name in ("road", "building", "car", "sky", "vegetation", "pole"):
      self.assertGreater(ff[name], 0.8, name)
    pf = dict(zip(st["class_names"], st["pixel_frequency"]))
    self.assertGreater(pf["road"], pf["person"])
    self.assertAlmostEqual(sum(pf.values()) + st["void_pixel_fraction"], 1.0,
                           places=4)

  def test_textured_everywhere_but_sky(self):
    root, side = _dataset("cityscapes", seed=3, width=128, height=64,
                          train=30, val=0, frames=1)
    r = side["frames"][0]
    _, img = _read(root, r["image"])
    _, lab = _read(root, r["label"])
    for label_id in (7, 11, 21):  # road, building, vegetation
      px = img[lab == label_id].astype(float)
      self.assertGreater(len(px), 50)
      self.assertGreater(px.std(0).mean(), 2.0, label_id)

  def test_source_camera_geometry_is_broader(self):
    _, cs = _dataset("cityscapes", width=32, height=16, train=16, val=0,
                     frames=1)
    hc = np.array([r["camera_height"] for r in cs["frames"]])
    pc = np.array([r["camera_pitch"] for r in cs["frames"]])
    self.assertTrue(((hc >= 1.2) & (hc <= 1.5)).all())
    self.assertLess(np.abs(pc).max(), 0.05)
    self.assertEqual({r["view"] for r in cs["frames"]}, {"car"})
    for layout in ("gta5", "synthia"):
      _, src = _dataset(layout, width=32, height=16, train=16, val=0,
                        frames=1)
      hs = np.array([r["camera_height"] for r in src["frames"]])
      ps = np.array([r["camera_pitch"] for r in src["frames"]])
      self.assertGreater(hs.max() - hs.min(), 2 * (hc.max() - hc.min()))
      self.assertGreater(np.abs(ps).max(), 0.1)
      self.assertLess(np.abs(ps).max(), np.deg2rad(10.5))
      self.assertGreater(ps.std(), 3 * pc.std())
      self.assertGreater(len({r["view"] for r in src["frames"]}), 1)

  def test_synthia_has_no_classes_outside_its_16(self):
    _, side = _dataset("synthia", width=32, height=16, train=16, val=0,
                       frames=1)
    ff = dict(zip(side["stats"]["class_names"],
                  side["stats"]["frame_frequency"]))
    self.assertEqual((ff["terrain"], ff["truck"], ff["train"]), (0, 0, 0))


class DeterminismTest(absltest.TestCase):

  def test_same_seed_same_bytes_other_seed_differs(self):
    a, _ = _dataset("gta5", seed=5, width=48, height=24, train=2, val=1)
    # Again, in two worker processes: the output must not change.
    b, _ = _dataset("gta5", seed=5, width=48, height=24, train=2, val=1,
                    tag="again", workers=2)
    c, _ = _dataset("gta5", seed=6, width=48, height=24, train=2, val=1)
    ta, tb, tc = _tree(a), _tree(b), _tree(c)
    self.assertEqual(sorted(ta), sorted(tb))
    for k in ta:
      self.assertEqual(ta[k], tb[k], k)
    self.assertEqual(sorted(ta), sorted(tc))
    self.assertNotEqual(ta["images/00001.png"], tc["images/00001.png"])


class GeometryTest(parameterized.TestCase):

  def _frame(self, root, side, split, seq, frame):
    r = next(x for x in side["frames"] if x["split"] == split and
             x["sequence"] == seq and x["frame"] == frame)
    _, img = _read(root, r["image"])
    _, dpng = _read(root, r["depth"])
    return (img.astype(np.float64), mc.decode_depth(dpng).astype(np.float64),
            np.array(r["pose"]).reshape(4, 4), r)

  @parameterized.parameters("cityscapes", "gta5")
  def test_reprojection_is_photometrically_consistent(self, layout):
    root, side = _dataset(layout, width=128, height=64, train=2, val=0,
                          frames=3, tag="geo")
    k = side["intrinsics"]
    kmat = np.array([[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]],
                     [0, 0, 1]])
    errs, base = [], []
    for seq in (0, 1):
      img0, d0, p0, _ = self._frame(root, side, "train", seq, 19)
      img1, d1, p1, _ = self._frame(root, side, "train", seq, 20)
      h, w = d0.shape
      v, u = np.nonzero(d0 > 0)
      cam = (np.stack([u, v, np.ones_like(u)], 1) @ np.linalg.inv(kmat).T
             ) * d0[v, u][:, None]
      world = cam @ p0[:3, :3].T + p0[:3, 3]
      inv1 = np.linalg.inv(p1)
      c1 = world @ inv1[:3, :3].T + inv1[:3, 3]
      z = c1[:, 2]
      uv = c1 @ kmat.T
      u1, v1 = uv[:, 0] / z, uv[:, 1] / z
      ok = (z > 0.1) & (u1 >= 0) & (u1 <= w - 1.001) & (v1 >= 0) & (
          v1 <= h - 1.001)
      # Bilinear sampling of frame 20 and of its depth (occlusion test).
      x0, y0 = np.floor(u1[ok]).astype(int), np.floor(v1[ok]).astype(int)
      fx, fy = (u1[ok] - x0)[:, None], (v1[ok] - y0)[:, None]
      samp = (img1[y0, x0] * (1 - fx) * (1 - fy) + img1[y0, x0 + 1] * fx *
              (1 - fy) + img1[y0 + 1, x0] * (1 - fx) * fy +
              img1[y0 + 1, x0 + 1] * fx * fy)
      near = d1[np.round(v1[ok]).astype(int), np.round(u1[ok]).astype(int)]
      vis = np.abs(near - z[ok]) < 0.03 * z[ok] + 0.05
      self.assertGreater(vis.mean(), 0.8)
      src = img0[v[ok], u[ok]]
      errs.append(np.abs(samp[vis] - src[vis]).mean(1))
      base.append(np.abs(img1[v[ok], u[ok]][vis] - src[vis]).mean(1))
    errs, base = np.concatenate(errs), np.concatenate(base)
    # Textures are fixed to the world: warping with GT depth and poses
    # explains the change between frames far better than no motion does.
    # (Medians: anti-aliased edges leave a few larger residuals. Noise that
    # is not fixed to the world gives a median error of 2-5 here.)
    self.assertLess(np.median(errs), 1.2)
    self.assertLess(np.median(errs), 0.5 * np.median(base))
    self.assertLess(errs.mean(), 6.0)

  def test_road_pixels_back_project_onto_the_ground(self):
    root, side = _dataset("cityscapes", width=128, height=64, train=2, val=0,
                          frames=3, tag="geo")
    k = side["intrinsics"]
    kinv = np.linalg.inv(np.array([[k["fx"], 0, k["cx"]],
                                   [0, k["fy"], k["cy"]], [0, 0, 1]]))
    _, depth, pose, r = self._frame(root, side, "train", 0, 19)
    _, lab = _read(root, r["label"])
    v, u = np.nonzero((lab == 7) & (depth > 0) & (depth < 60))
    self.assertGreater(len(v), 100)
    cam = (np.stack([u, v, np.ones_like(u)], 1) @ kinv.T) * depth[v, u, None]
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    # Road is the plane y = 0 (rail tracks are 12 mm decals on it).
    np.testing.assert_allclose(world[:, 1], 0.0, atol=0.02)
    # Sky is invalid depth and everything else is valid.
    np.testing.assert_array_equal(depth == 0, lab == 23)

  def test_disparity_round_trips_to_depth(self):
    root, side = _dataset("cityscapes", width=128, height=64, train=2, val=0,
                          frames=3, tag="geo")
    fx = side["intrinsics"]["fx"]
    for r in side["frames"]:
      _, dpng = _read(root, r["depth"])
      _, disp = _read(root, r["disparity_sequence"])
      depth = mc.decode_depth(dpng)
      from_disp = mc.decode_disparity(disp, fx)
      np.testing.assert_array_equal(depth > 0, from_disp > 0)
      m = (depth > 0) & (depth < 50)
      np.testing.assert_allclose(from_disp[m], depth[m], rtol=0.01)

  def test_encodings(self):
    d = np.array([[0.0, 1.0, 12.3456, np.inf, 300.0]], np.float32)
    np.testing.assert_allclose(mc.decode_depth(mc.encode_depth(d)),
                               [[0, 1, 12.34375, 0, 0]], atol=1e-6)
    p = mc.encode_disparity(np.array([[0.0, 10.0]]), fx=100.0)
    np.testing.assert_array_equal(p, [[0, round(0.209313 * 10 * 256) + 1]])
    np.testing.assert_allclose(mc.decode_disparity(p, 100.0), [[0, 10.0]],
                               rtol=2e-3)


class ApiTest(absltest.TestCase):

  def test_rendered_frames(self):
    self.assertEqual(mc.rendered_frames(1), [19])
    self.assertEqual(mc.rendered_frames(3), [18, 19, 20])
    self.assertEqual(mc.rendered_frames(30), list(range(30)))
    self.assertEqual(mc.rendered_frames(24)[-1], 29)
    with self.assertRaisesRegex(ValueError, "frames_per_sequence"):
      mc.rendered_frames(0)

  def test_bad_arguments(self):
    with tempfile.TemporaryDirectory() as d:
      with self.assertRaisesRegex(ValueError, "kitti"):
        mc.generate(d, "kitti", log=None)
      open(os.path.join(d, "x"), "w").close()
      with self.assertRaisesRegex(FileExistsError, "not empty"):
        mc.generate(d, "gta5", num_train_sequences=1, num_val_sequences=0,
                    width=16, height=8, log=None)
      with self.assertRaisesRegex(FileExistsError, "minicity.json"):
        mc.generate(d, "gta5", overwrite=True, log=None)
    with self.assertRaisesRegex(FileNotFoundError, "minicity.json"):
      mc.load_sidecar(_TMP.name)

  def test_cli_config_and_stats(self):
    out = os.path.join(_TMP.name, "cli")
    sheet = os.path.join(_TMP.name, "sheet.png")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
      mc.main(["--out", out, "--layout", "synthia", "--seed", "1",
               "--width", "32", "--height", "16", "--train-sequences", "1",
               "--val-sequences", "1", "--frames", "1", "--contact-sheet",
               sheet])
      mc.main(["stats", out])
    self.assertIn("bicycle", buf.getvalue())
    self.assertIn("sequence 2/2", buf.getvalue())
    with Image.open(sheet) as im:
      self.assertEqual(im.size, (3 * 32, 2 * 16))
    cfg = common.minicity_config(layout="synthia", seed=1, width=32,
                                 height=16, num_train_sequences=1,
                                 num_val_sequences=1, frames_per_sequence=1)
    side = mc.generate_from_config(cfg, os.path.join(_TMP.name, "cfg"),
                                   log=None)
    a, b = _tree(out), _tree(os.path.join(_TMP.name, "cfg"))
    self.assertEqual(a, b)
    self.assertLen(side["frames"], 2)


if __name__ == "__main__":
  absltest.main()
