"""Tests of the label tables (sdeseg_jax/data/labels.py)."""

from absl.testing import absltest
import numpy as np

from sdeseg_jax.data import labels as L

try:  # The official tables are the oracle when installed.
  from cityscapesscripts.helpers import labels as official
except ImportError:
  official = None


class CityscapesTableTest(absltest.TestCase):

  def test_matches_official_cityscapes_scripts(self):
    if official is None:
      self.skipTest("cityscapesscripts not installed")
    self.assertLen(L.LABELS, len(official.labels))
    for ours, ref in zip(L.LABELS, official.labels):
      self.assertEqual((ours.name, ours.id, ours.category, ours.color),
                       (ref.name, ref.id, ref.category, tuple(ref.color)))
      want = L.IGNORE_INDEX if ref.trainId in (255, -1) else ref.trainId
      self.assertEqual(ours.train_id, want, ours.name)

  def test_train_ids_follow_reference_order(self):
    # As in the reference: these label ids map to 0..18 in order.
    ids = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31,
           32, 33)
    self.assertEqual(L.TRAIN_LABEL_IDS, ids)
    self.assertEqual(L.CLASS_NAMES[0], "road")
    self.assertEqual(L.CLASS_NAMES[-1], "bicycle")
    lut = L.CITYSCAPES_ID_TO_TRAINID_LUT
    self.assertEqual(lut.shape, (256,))
    self.assertEqual(lut.dtype, np.uint8)
    np.testing.assert_array_equal(lut[list(ids)], np.arange(19))
    void = np.setdiff1d(np.arange(256), ids)
    self.assertTrue((lut[void] == 250).all())

  def test_lut_is_read_only(self):
    with self.assertRaises(ValueError):
      L.CITYSCAPES_ID_TO_TRAINID_LUT[0] = 3

  def test_map_arrays_and_reject_bad_values(self):
    ids = np.array([[7, 0], [33, 255]], np.uint8)
    np.testing.assert_array_equal(L.cityscapes_to_train_ids(ids),
                                  [[0, 250], [18, 250]])
    with self.assertRaisesRegex(ValueError, r"\[0, 255\]"):
      L.cityscapes_to_train_ids(np.array([-1, 7]))
    with self.assertRaisesRegex(TypeError, "integer"):
      L.cityscapes_to_train_ids(np.array([7.0]))

  def test_colorize(self):
    rgb = L.colorize_train_ids(np.array([[0, 10, 250]]))
    np.testing.assert_array_equal(
        rgb[0], [[128, 64, 128], [70, 130, 180], [0, 0, 0]])
    self.assertEqual(L.LABEL_ID_PALETTE.shape, (256, 3))
    np.testing.assert_array_equal(L.LABEL_ID_PALETTE[26], [0, 0, 142])


class SourceTablesTest(absltest.TestCase):

  def test_gta5_shares_cityscapes_ids(self):
    self.assertEqual(L.GTA5_ID_TO_TRAINID, L.CITYSCAPES_ID_TO_TRAINID)
    self.assertEqual(L.GTA5_ID_TO_TRAINID[26], 13)

  def test_synthia_map(self):
    # Spot checks of the reference's Synthia mapping.
    m = L.SYNTHIA_ID_TO_TRAINID
    self.assertEqual((m[3], m[4], m[2], m[1], m[8], m[11], m[21]),
                     (0, 1, 2, 10, 13, 18, 3))
    self.assertLen(m, 19)
    self.assertEqual(sorted(m.values()), list(range(19)))
    np.testing.assert_array_equal(
        L.synthia_to_train_ids(np.array([0, 3, 22, 13])), [250, 0, 250, 250])

  def test_cityscapes_to_synthia_inverse(self):
    lut = L.CITYSCAPES_ID_TO_SYNTHIA_ID_LUT
    for label_id in range(34):
      want = L.CITYSCAPES_ID_TO_TRAINID_LUT[label_id]
      got = L.SYNTHIA_ID_TO_TRAINID_LUT[lut[label_id]]
      self.assertEqual(got, want, f"label id {label_id}")
    self.assertEqual(lut[9], L.SYNTHIA_PARKING_ID)
    self.assertEqual(lut[0], 0)

  def test_synthia_protocols(self):
    self.assertLen(L.SYNTHIA_13_TRAIN_IDS, 13)
    self.assertLen(L.SYNTHIA_16_TRAIN_IDS, 16)
    self.assertTrue(set(L.SYNTHIA_13_TRAIN_IDS) < set(L.SYNTHIA_16_TRAIN_IDS))
    missing = sorted(set(range(19)) - set(L.SYNTHIA_16_TRAIN_IDS))
    self.assertEqual([L.CLASS_NAMES[i] for i in missing],
                     ["terrain", "truck", "train"])

  def test_camvid(self):
    self.assertLen(L.CAMVID_CLASS_NAMES, 11)
    self.assertEqual(L.CAMVID_REFERENCE_NUM_CLASSES, 12)
    np.testing.assert_array_equal(
        L.camvid_to_train_ids(np.array([0, 10, 11, 200])), [0, 10, 250, 250])


if __name__ == "__main__":
  absltest.main()
