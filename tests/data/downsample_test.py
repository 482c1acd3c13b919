"""Tests of the offline downsampling CLI (sdeseg_jax/data/downsample.py)."""

import os
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from sdeseg_jax.data import downsample


def _write(path, w=40, h=20, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(path)


class DownsampleTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    for split in ("train", "test"):
      _write(f"{self.root}/leftImg8bit/{split}/a/a_000000_000019_"
             "leftImg8bit.png")
    _write(f"{self.root}/leftImg8bit_sequence/train/a/a_000000_000018_"
           "leftImg8bit.png", seed=1)
    self.logs = []

  def test_converts_skips_test_and_resumes(self):
    counts = downsample.run(self.root, "cityscapes", (16, 8),
                            log=self.logs.append)
    self.assertEqual(counts, {"total": 2, "converted": 2, "skipped": 0,
                              "repaired": 0})
    out = (f"{self.root}/leftImg8bit_small/train/a/"
           "a_000000_000019_leftImg8bit.jpg")
    with Image.open(out) as img:
      self.assertEqual((img.format, img.size, img.mode),
                       ("JPEG", (16, 8), "RGB"))
      # 4:4:4 chroma: no subsampling of the colour planes.
      self.assertEqual(img.layer[0][1:3], img.layer[1][1:3])
    # Pixel values are a Lanczos resize stored at q98 (close, not equal).
    with Image.open(out.replace("_small", "").replace(".jpg", ".png")) as s:
      ref = np.asarray(s.resize((16, 8), Image.LANCZOS), np.float32)
    self.assertLess(np.abs(np.asarray(Image.open(out), np.float32)
                           - ref).mean(), 4.0)
    self.assertFalse(os.path.exists(f"{self.root}/leftImg8bit_small/test"))
    self.assertTrue(any("2/2" in l for l in self.logs))
    # Resumable: a rerun skips everything; a truncated output is repaired.
    with open(out, "r+b") as f:
      f.truncate(100)
    counts = downsample.run(self.root, "cityscapes", (16, 8),
                            log=self.logs.append)
    self.assertEqual(counts, {"total": 2, "converted": 0, "skipped": 2,
                              "repaired": 1})
    self.assertTrue(downsample.is_valid(out))

  def test_missing_folders_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, "images"):
      downsample.run(self.root, "gta5", (16, 8), log=self.logs.append)
    with self.assertRaises(SystemExit) as cm:  # one line, exit code 1
      downsample.main(["--root", self.root, "--layout", "synthia"])
    self.assertEqual(cm.exception.code, 1)


if __name__ == "__main__":
  absltest.main()
