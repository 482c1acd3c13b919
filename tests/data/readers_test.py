"""Tests of the dataset readers and the tfds builder on MiniCity output.

Tiny MiniCity datasets (64x32; 3 train + 2 val sequences) of every layout
are generated once for the module; bad-input cases break copies of them.
"""

import io
import json
import os
import re
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from configs import common
from sdeseg_jax.data import builder
from sdeseg_jax.data import downsample
from sdeseg_jax.data import labels
from sdeseg_jax.data import minicity
from sdeseg_jax.data import prepare
from sdeseg_jax.data import readers
from sdeseg_jax.data.readers import DatasetError

_TMP = None
_W, _H = 64, 32
_N_TRAIN, _N_VAL = 3, 2


def setUpModule():
  global _TMP
  _TMP = tempfile.mkdtemp()
  for seed, layout in enumerate(minicity.LAYOUTS):
    minicity.generate(_root(layout), layout, seed, width=_W, height=_H,
                      num_train_sequences=_N_TRAIN,
                      num_val_sequences=_N_VAL, log=None)


def tearDownModule():
  shutil.rmtree(_TMP, ignore_errors=True)


def _root(layout):
  return os.path.join(_TMP, layout)


def _stream(layout, path=None, **kw):
  kw.setdefault("val_count", _N_VAL)
  return common.stream_config(f"t_{layout}", layout,
                              path=path or _root(layout), **kw)


def _copy(layout):
  dst = tempfile.mkdtemp(dir=_TMP)
  shutil.rmtree(dst)
  shutil.copytree(_root(layout), dst)
  return dst


def _train_ids(path, layout):
  return readers.load_train_ids(path, layout)


class ReadersTest(parameterized.TestCase):

  @parameterized.parameters(*minicity.LAYOUTS)
  def test_segmentation_samples(self, layout):
    sidecar = minicity.load_sidecar(_root(layout))
    k = sidecar["intrinsics"]
    for split, n in (("train", _N_TRAIN), ("val", _N_VAL)):
      samples = readers.list_samples(_stream(layout), split, check=True)
      self.assertLen(samples, n)
      self.assertEqual([s.index for s in samples], list(range(n)))
      paths = [s.frames[0] for s in samples]
      self.assertEqual(paths, sorted(paths))
      for s in samples:
        self.assertLen(s.frames, 1)
        self.assertEqual(s.full_size, (_W, _H))
        np.testing.assert_allclose(
            s.intrinsics, (k["fx"] / _W, k["fy"] / _H, k["cx"] / _W,
                           k["cy"] / _H))
        t = _train_ids(s.label, layout)
        self.assertEqual((t.shape, t.dtype), ((_H, _W), np.uint8))
        self.assertTrue(np.all((t < 19) | (t == 250)))
        self.assertGreater(len(np.unique(t)), 2)
        d = np.asarray(Image.open(s.depth)) * s.depth_scale
        self.assertEqual(d.shape, (_H, _W))
        self.assertGreater(d.max(), 1.0)
        self.assertTrue(np.isfinite(s.camera_height))

  @parameterized.parameters(*minicity.LAYOUTS)
  def test_sequence_samples(self, layout):
    s = _stream(layout, frame_offsets=(1, 0, -1), all_frames=True)
    samples = readers.list_samples(s, "train", check=True)
    # One centre frame with both neighbours per rendered 3-frame sequence
    # (Synthia's train sequences are every video folder, val included).
    n_seq = _N_TRAIN + (_N_VAL if layout == "synthia" else 0)
    self.assertLen(samples, n_seq)
    for smp in samples:
      self.assertLen(smp.frames, 3)
      self.assertIsNone(smp.label)
      # Frames are ordered by sorted offsets: -1, 0, +1.
      ids = [int(re.findall(r"\d+", os.path.basename(f).replace(
          "leftImg8bit", ""))[-1]) for f in smp.frames]
      self.assertEqual(np.diff(ids).tolist(), [1, 1])
      self.assertTrue(smp.relpath.endswith(os.path.relpath(
          smp.frames[1], _root(layout))))

  def test_cityscapes_all_frames_share_the_snippet_camera(self):
    root = os.path.join(_TMP, "cs5")
    minicity.generate(root, "cityscapes", 3, width=_W, height=_H,
                      num_train_sequences=1, num_val_sequences=0,
                      frames_per_sequence=5, log=None)
    os.remove(os.path.join(root, "minicity.json"))
    s = _stream("cityscapes", root, frame_offsets=(-1, 0, 1),
                all_frames=True)
    samples = readers.list_samples(s, "train", check=True)
    # Frames 17..21 rendered: centres 18, 19, 20 have both neighbours.
    self.assertEqual([re.findall(r"_(\d{6})_leftImg8bit", smp.relpath)[0]
                      for smp in samples], ["000018", "000019", "000020"])
    # Only frame 19 has a camera file; the others use the snippet's.
    self.assertLen({smp.intrinsics for smp in samples}, 1)
    k = minicity.intrinsics("cityscapes", _W, _H)
    self.assertAlmostEqual(samples[0].intrinsics[0], k[0, 0] / _W)

  def test_cityscapes_neighbours_of_annotated_frames(self):
    s = _stream("cityscapes", frame_offsets=(-1, 0, 1))
    smp = readers.list_samples(s, "train")[0]
    self.assertIn("leftImg8bit_sequence", smp.frames[0])
    self.assertIn("_000018_", smp.frames[0])
    self.assertIn(f"{os.sep}leftImg8bit{os.sep}", smp.frames[1])
    self.assertIn("_000020_", smp.frames[2])

  def test_cityscapes_camera_json_and_disparity_without_sidecar(self):
    root = _copy("cityscapes")
    os.remove(os.path.join(root, "minicity.json"))
    with_sc = readers.list_samples(_stream("cityscapes"), "train")
    without = readers.list_samples(_stream("cityscapes", root), "train")
    for a, b in zip(with_sc, without):
      np.testing.assert_allclose(a.intrinsics, b.intrinsics, rtol=1e-6)
      self.assertEqual(b.depth_kind, "cityscapes_disparity")
      self.assertTrue(np.isnan(b.camera_height))
      # depth = baseline * fx / ((p - 1) / 256) agrees with the GT depth.
      raw = np.asarray(Image.open(b.depth))
      depth = readers.disparity_to_depth(raw, b.depth_scale)
      gt = minicity.decode_depth(np.asarray(Image.open(a.depth)))
      valid = (raw > 1) & (gt > 0) & (gt < 40)
      self.assertGreater(valid.mean(), 0.3)
      np.testing.assert_allclose(depth[valid], gt[valid], rtol=0.05)
      self.assertTrue(np.all(depth[raw == 0] == 0))

  def test_class_statistics_match_the_generator(self):
    for layout in minicity.LAYOUTS:
      b = builder.prepare(_stream(layout), os.path.join(_TMP, "tfds"))
      stats = prepare.dataset_statistics(b)
      expect = minicity.load_sidecar(_root(layout))["stats"]
      n = {s: stats[s]["labeled"] for s in stats}
      self.assertEqual(sum(n.values()), expect["num_annotated"])
      for c, name in enumerate(labels.CLASS_NAMES):
        got = sum(stats[s]["class_pixel_freq"][name] * n[s] for s in stats)
        self.assertAlmostEqual(got / sum(n.values()),
                               expect["pixel_frequency"][c], delta=2e-5,
                               msg=f"{layout} {name}")
      self.assertEqual(stats["train"]["image_sizes"], [[_W, _H]])
      text = prepare.format_statistics(layout, stats)
      self.assertIn("class pixel freq: road", text)

  def test_builder_records(self):
    b = builder.prepare(_stream("cityscapes", frame_offsets=(-1, 0, 1),
                                with_depth=True),
                        os.path.join(_TMP, "tfds"))
    src = b.as_data_source(split="train")
    samples = readers.list_samples(
        _stream("cityscapes", frame_offsets=(-1, 0, 1)), "train")
    self.assertLen(src, _N_TRAIN)
    for i, smp in enumerate(samples):
      rec = src[i]
      self.assertEqual(int(rec["index"]), i)  # record position == index
      self.assertLen(rec["frames"], 3)
      with open(smp.frames[0], "rb") as f:
        self.assertEqual(bytes(rec["frames"][0]), f.read())
      lbl = np.asarray(Image.open(io.BytesIO(bytes(rec["label"]))))
      np.testing.assert_array_equal(lbl, _train_ids(smp.label, "cityscapes"))
      depth = np.asarray(Image.open(io.BytesIO(bytes(rec["depth"])))
                        ) * rec["depth_unit"]
      np.testing.assert_allclose(depth, minicity.decode_depth(
          np.asarray(Image.open(smp.depth))))

  def test_small_folders_are_used_when_present(self):
    root = _copy("cityscapes")
    downsample.run(root, "cityscapes", (_W, _H), log=lambda s: None)
    s = _stream("cityscapes", root, frame_offsets=(0, 1))
    small = readers.list_samples(s, "train", check=True)
    full = readers.list_samples(_stream("cityscapes", root,
                                        frame_offsets=(0, 1),
                                        image_folder="full"), "train")
    for a, b in zip(small, full):
      self.assertIn("leftImg8bit_small", a.frames[0])
      self.assertIn("leftImg8bit_sequence_small", a.frames[1])
      self.assertTrue(a.frames[0].endswith(".jpg"))
      # Same sample metadata through the sidecar (keys without _small).
      self.assertEqual((a.depth, a.camera_height, a.intrinsics),
                       (b.depth, b.camera_height, b.intrinsics))
      self.assertIn("_000019_", b.relpath)  # centre = offset 0, not 1.

  def test_camvid_layout(self):
    root = os.path.join(_TMP, "camvid")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
      for i in range(2):
        for sub, arr in ((split, rng.integers(0, 255, (24, 32, 3),
                                               np.uint8)),
                         (split + "annot", rng.integers(0, 12, (24, 32),
                                                        np.uint8))):
          os.makedirs(os.path.join(root, sub), exist_ok=True)
          Image.fromarray(arr).save(os.path.join(root, sub, f"f{i}.png"))
    s = common.stream_config("cv", "camvid", path=root)
    samples = readers.list_samples(s, "test", check=True)
    self.assertLen(samples, 2)
    raw = np.asarray(Image.open(samples[0].label))
    t = _train_ids(samples[0].label, "camvid")
    np.testing.assert_array_equal(t[raw == 11], 250)
    np.testing.assert_array_equal(t[raw < 11], raw[raw < 11])
    Image.fromarray(np.full((24, 32), 12, np.uint8)).save(samples[1].label)
    with self.assertRaisesRegex(DatasetError, r"f1.png.*\[12\].*camvid"):
      _train_ids(samples[1].label, "camvid")


class BadInputTest(absltest.TestCase):
  """Every broken dataset fails at preparation with the file named."""

  def _prepare(self, stream):
    return builder.prepare(stream, tempfile.mkdtemp(dir=_TMP))

  def test_missing_folder(self):
    with self.assertRaisesRegex(DatasetError, r"missing folder .*nothere"):
      self._prepare(_stream("cityscapes", os.path.join(_TMP, "nothere")))

  def test_layout_mismatch(self):
    with self.assertRaisesRegex(DatasetError,
                                r"missing folder .*leftImg8bit"):
      self._prepare(_stream("cityscapes", _root("gta5")))
    with self.assertRaisesRegex(DatasetError, r"missing folder .*images"):
      self._prepare(_stream("gta5", _root("synthia")))

  def test_truncated_image(self):
    root = _copy("gta5")
    path = os.path.join(root, "images", "00002.png")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    with self.assertRaisesRegex(DatasetError,
                                r"00002.png: corrupt or truncated"):
      self._prepare(_stream("gta5", root))

  def test_label_id_outside_table(self):
    root = _copy("cityscapes")
    lbl_dir = os.path.join(root, "gtFine", "val")
    city = sorted(os.listdir(lbl_dir))[0]
    name = sorted(f for f in os.listdir(os.path.join(lbl_dir, city))
                  if f.endswith("labelIds.png"))[0]
    path = os.path.join(lbl_dir, city, name)
    ids = np.asarray(Image.open(path)).copy()
    ids[0, 0] = 40
    Image.fromarray(ids).save(path)
    with self.assertRaisesRegex(
        DatasetError, rf"{name}: label ids \[40\] are not in the cityscapes"):
      self._prepare(_stream("cityscapes", root))

  def test_missing_neighbour_frame(self):
    root = _copy("cityscapes")
    seq = os.path.join(root, "leftImg8bit_sequence", "train")
    city = sorted(os.listdir(seq))[0]
    victim = sorted(f for f in os.listdir(os.path.join(seq, city))
                    if "_000020_" in f)[0]
    os.remove(os.path.join(seq, city, victim))
    with self.assertRaisesRegex(
        DatasetError, rf"missing neighbour frame .*{victim}"):
      self._prepare(_stream("cityscapes", root, frame_offsets=(-1, 0, 1)))

  def test_camera_json_without_intrinsics(self):
    root = _copy("cityscapes")
    os.remove(os.path.join(root, "minicity.json"))
    cam = os.path.join(root, "camera", "train")
    city = sorted(os.listdir(cam))[0]
    name = sorted(os.listdir(os.path.join(cam, city)))[0]
    with open(os.path.join(cam, city, name), "w") as f:
      json.dump({"extrinsic": {"baseline": 0.2}}, f)
    with self.assertRaisesRegex(
        DatasetError, rf"{name}: expected an 'intrinsic' object"):
      self._prepare(_stream("cityscapes", root))

  def test_broken_sidecar(self):
    root = _copy("synthia")
    with open(os.path.join(root, "minicity.json"), "w") as f:
      json.dump({"width": 64}, f)
    with self.assertRaisesRegex(DatasetError,
                                r"minicity.json: not a MiniCity sidecar"):
      self._prepare(_stream("synthia", root))

  def test_val_count_too_large(self):
    with self.assertRaisesRegex(DatasetError, r"val_count=500 but only 5"):
      self._prepare(_stream("gta5", val_count=500))


if __name__ == "__main__":
  absltest.main()
