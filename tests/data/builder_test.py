"""Tests of the prepared-data fingerprint (sdeseg_jax/data/builder.py)."""

import io
import os
import shutil
from unittest import mock

from absl.testing import absltest
import numpy as np
from PIL import Image

from configs import common
from sdeseg_jax.data import builder
from sdeseg_jax.data import readers
from tests import _fixtures

_LABEL = ("gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")


class SourceFingerprintTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp, self.root, self.tfds = _fixtures.generate_minicity(
        1, 1, width=16, height=8)
    self.stream = common.stream_config(
        "mc_fp", "cityscapes", path=self.root, image_size=(8, 16),
        full_res=(16, 8), num_workers=0)

  def tearDown(self):
    shutil.rmtree(self.tmp, ignore_errors=True)
    super().tearDown()

  def _write_label(self, value):
    path = os.path.join(self.root, _LABEL)
    Image.fromarray(np.full((8, 16), value, np.uint8)).save(path)
    return path

  def _stored_label(self, b):
    rec = b.as_data_source(split="train")[0]
    return np.asarray(Image.open(io.BytesIO(bytes(rec["label"]))))

  def test_a_changed_label_file_is_checked_again(self):
    b = builder.prepare(self.stream, self.tfds)
    info = os.path.join(b.data_dir, "dataset_info.json")
    mtime = os.stat(info).st_mtime_ns
    # Unchanged folder: reused as it is.
    b = builder.prepare(self.stream, self.tfds)
    self.assertEqual(os.stat(info).st_mtime_ns, mtime)
    # Unknown label ids: the new file is read and rejected by name.
    bad = self._write_label(200)
    with self.assertRaisesRegex(readers.DatasetError,
                                f"{bad}: label ids \\[200\\]"):
      builder.prepare(self.stream, self.tfds)
    # A valid new label (road, id 7 -> train id 0) is what the prepared
    # copy then holds.
    self._write_label(7)
    b = builder.prepare(self.stream, self.tfds)
    np.testing.assert_array_equal(self._stored_label(b), 0)

  def test_unchecked_prepare_trusts_a_prepared_dataset(self):
    with mock.patch.object(builder, "source_files",
                           side_effect=AssertionError("listed")):
      # Not prepared yet: the listing is needed for the record.
      with self.assertRaisesRegex(AssertionError, "listed"):
        builder.prepare(self.stream, self.tfds, check_sources=False)
    builder.prepare(self.stream, self.tfds)
    with mock.patch.object(builder, "source_files",
                           side_effect=AssertionError("listed")):
      builder.prepare(self.stream, self.tfds, check_sources=False)

  def test_listing_covers_size_and_mtime_and_skips_the_tfds_dir(self):
    inside = os.path.join(self.root, "tfds")
    os.makedirs(os.path.join(inside, "x"))
    open(os.path.join(inside, "x", "f"), "w").close()
    files = builder.source_files(self.stream, exclude=inside)
    self.assertIn(_LABEL, files)
    self.assertIn("minicity.json", files)
    self.assertFalse(any(k.startswith("tfds") for k in files))
    path = os.path.join(self.root, _LABEL)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = builder.source_files(self.stream, exclude=inside)
    self.assertEqual(builder.describe_changes(files, new),
                     f"1 changed ({_LABEL})")
    del new[_LABEL]
    new["a"] = new["b"] = [1, 1]
    self.assertEqual(builder.describe_changes(files, new),
                     f"2 added (a, b); 1 removed ({_LABEL})")


if __name__ == "__main__":
  absltest.main()
