"""Tests of the data-resolution layer (sdeseg_jax/data/resolve.py)."""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
import ml_collections as mlc

from configs import common
from sdeseg_jax.data import layouts
from sdeseg_jax.data import minicity
from sdeseg_jax.data import readers
from sdeseg_jax.data import resolve
from tests.cli import _cli


def _config(path="", with_minicity=True, layout="cityscapes"):
  c = mlc.ConfigDict()
  if with_minicity:
    c.minicity = common.minicity_config(
        layout="cityscapes", width=16, height=8, num_train_sequences=1,
        num_val_sequences=0, frames_per_sequence=1)
  c.data = mlc.ConfigDict()
  c.data.train = common.stream_config("mc_train", layout, path=path)
  c.lock()
  return c


class LayoutRegistryTest(absltest.TestCase):

  def test_readers_and_builder_use_the_registry(self):
    self.assertEqual(readers.LAYOUTS, ("cityscapes", "gta5", "synthia",
                                       "camvid"))
    # Every registered layout has its reader, and nothing else has one.
    self.assertEqual(set(readers.READERS), set(layouts.LAYOUTS))
    self.assertEqual(layouts.get("camvid").splits, ("train", "val", "test"))
    with self.assertRaisesRegex(ValueError, r"config.data.x.layout='kitti'"):
      layouts.get("kitti", "config.data.x.layout")


class DatasetRootTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.workdir = os.path.join(self.tmp, "work")

  def _users_folder(self, *subdirs):
    user = os.path.join(self.tmp, "users_data")
    os.makedirs(user)
    for d in subdirs:
      os.makedirs(os.path.join(user, d))
    with open(os.path.join(user, "notes.txt"), "w") as f:
      f.write("my data\n")
    return user

  def test_a_given_path_is_only_read(self):
    user = self._users_folder()
    before = _cli.tree_digest(user)
    with mock.patch.object(minicity, "generate_from_config") as gen:
      with self.assertRaisesRegex(
          FileNotFoundError,
          r"config.data.train.path=.*users_data.* is not a cityscapes folder"
          r".*leftImg8bit.*only read"):
        resolve.dataset_root(_config(user), "train", self.workdir)
    gen.assert_not_called()
    self.assertEqual(_cli.tree_digest(user), before)
    self.assertFalse(os.path.exists(user + resolve.DONE_SUFFIX))
    self.assertFalse(os.path.exists(self.workdir))

  def test_a_given_dataset_is_returned_unchanged(self):
    user = self._users_folder("leftImg8bit")
    before = _cli.tree_digest(user)
    with mock.patch.object(minicity, "generate_from_config") as gen:
      self.assertEqual(
          resolve.dataset_root(_config(user), "train", self.workdir), user)
    gen.assert_not_called()
    self.assertEqual(_cli.tree_digest(user), before)

  def test_missing_path_names_the_key(self):
    missing = os.path.join(self.tmp, "nope")
    with self.assertRaisesRegex(FileNotFoundError,
                                r"config.data.train.path=.*nope.*does not "
                                "exist"):
      resolve.dataset_root(_config(missing), "train", self.workdir)
    with self.assertRaisesRegex(FileNotFoundError,
                                "config.data.train.path is empty"):
      resolve.dataset_root(_config(with_minicity=False), "train",
                           self.workdir)
    with self.assertRaisesRegex(ValueError, "config.minicity.layout"):
      resolve.dataset_root(_config(layout="gta5"), "train", self.workdir)

  def test_empty_path_generates_into_the_workdir_once(self):
    config = _config()
    root = resolve.dataset_root(config, "train", self.workdir, log=None)
    self.assertEqual(root, os.path.join(self.workdir, "data", "mc_train"))
    self.assertTrue(resolve.is_generated(root))
    self.assertTrue(os.path.isfile(os.path.join(root, minicity.SIDECAR)))
    before = _cli.tree_digest(root)
    with mock.patch.object(minicity, "generate_from_config") as gen:
      self.assertEqual(resolve.dataset_root(config, "train", self.workdir),
                       root)
    gen.assert_not_called()
    self.assertEqual(_cli.tree_digest(root), before)
    self.assertEqual(resolve.dataset_root(config, "train", self.workdir,
                                          folder="other", log=None),
                     os.path.join(self.workdir, "data", "other"))

  def test_an_interrupted_generation_is_replaced(self):
    config = _config()
    root = resolve.generated_root(self.workdir, "mc_train")
    os.makedirs(root)
    # What an interrupted run leaves: the sidecar of a partial dataset and
    # no done-marker.
    with open(os.path.join(root, minicity.SIDECAR), "w") as f:
      f.write("{}")
    with open(os.path.join(root, "partial.png"), "w") as f:
      f.write("x")
    self.assertTrue(resolve.ensure_minicity(config.minicity, root, log=None))
    self.assertFalse(os.path.exists(os.path.join(root, "partial.png")))
    self.assertEqual(minicity.load_sidecar(root)["width"], 16)
    self.assertFalse(resolve.ensure_minicity(config.minicity, root,
                                             log=None))


class DataRootStreamsTest(absltest.TestCase):

  def test_fills_and_checks_folders(self):
    root = tempfile.mkdtemp()
    c = mlc.ConfigDict()
    c.data_root = root
    c.folders = dict(source="gta5", source_depth="pd/gta5")
    c.data = dict(source=common.stream_config("src", "gta5"))
    with self.assertRaisesRegex(
        FileNotFoundError, r"config.data.source.path=.*gta5.* does not exist"
        r": expected the source dataset in the gta5 layout \(images/\|"
        r"images_small/, labels/\); set --config.data_root"):
      resolve.data_root_streams(c, ["source"], depth_roles=("source",))
    os.makedirs(os.path.join(root, "gta5", "images"))
    with self.assertRaisesRegex(FileNotFoundError,
                                "found none of \\['labels'\\]"):
      resolve.data_root_streams(c, ["source"])
    os.makedirs(os.path.join(root, "gta5", "labels"))
    out = resolve.data_root_streams(c, ["source"], depth_roles=("source",))
    self.assertEqual(out["source"].path, os.path.join(root, "gta5"))
    self.assertEqual(out["source"].pseudo_depth_dir,
                     os.path.join(root, "pd/gta5"))
    self.assertEqual(c.data.source.path, "")  # The config is not changed.


if __name__ == "__main__":
  absltest.main()
