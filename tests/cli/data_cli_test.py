"""Command-line catalogue of the data layer: a user's data is never written,
and prepared data never goes stale.

Each case runs the real entry point in a subprocess (``_cli.run_main`` /
``_cli.run_module``) and checks the exit code, that the error names the
config key or file, that no traceback is printed, and that the user's folder
is unchanged (``_cli.tree_digest`` before/after).
"""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from tests.cli import _cli

_LABEL = "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"


def _users_folder(root: str) -> str:
  """Someone's folder: a MiniCity sidecar (as the reported case had) and a
  file of their own, but no dataset in the cityscapes layout."""
  user = os.path.join(root, "users_data")
  os.makedirs(user)
  with open(os.path.join(user, "minicity.json"), "w") as f:
    json.dump({"generator": "sdeseg_jax.data.minicity"}, f)
  with open(os.path.join(user, "my_notes.txt"), "w") as f:
    f.write("do not delete\n")
  return user


class UsersDataIsOnlyReadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, True)

  def test_data_path_without_a_dataset_is_an_error_not_a_target(self):
    user = _users_folder(self.tmp)
    before = _cli.tree_digest(user)
    work = os.path.join(self.tmp, "work")
    r = _cli.run_main("--config=configs/sde_minicity.py:runlocal",
                      f"--config.data.train.path={user}",
                      f"--workdir={work}")
    self.assertEqual(r.returncode, 1, r.stderr[-2000:])
    self.assertIn("config.data.train.path", r.last_error_line)
    self.assertIn("is not a cityscapes folder", r.last_error_line)
    # Nothing was generated anywhere: not into the user's folder, not
    # beside it (no done-marker), not into the workdir.
    self.assertEqual(_cli.tree_digest(user), before)
    self.assertFalse(os.path.exists(user + ".done"))
    self.assertFalse(os.path.exists(os.path.join(work, "data")))
    # Needs the cli branch (main.py prints one message, no traceback).
    self.assertFalse(r.has_traceback, r.stderr[-2000:])

  def test_minicity_cli_refuses_a_folder_that_is_not_minicity(self):
    user = os.path.join(self.tmp, "photos")
    os.makedirs(user)
    with open(os.path.join(user, "a.jpg"), "wb") as f:
      f.write(b"\xff\xd8 not really")
    before = _cli.tree_digest(user)
    r = _cli.run_module("sdeseg_jax.data.minicity", "--out", user,
                        "--layout", "cityscapes", "--width", "16",
                        "--height", "8", "--overwrite", "--quiet")
    self.assertEqual(r.returncode, 1, r.stderr[-2000:])
    self.assertIn(user, r.last_error_line)
    self.assertIn("not a MiniCity dataset", r.last_error_line)
    self.assertFalse(r.has_traceback, r.stderr[-2000:])
    self.assertEqual(_cli.tree_digest(user), before)
    r = _cli.run_module("sdeseg_jax.data.minicity", "stats", user)
    self.assertEqual(r.returncode, 1, r.stderr[-2000:])
    self.assertIn("minicity.json: no MiniCity sidecar", r.last_error_line)
    self.assertFalse(r.has_traceback, r.stderr[-2000:])


class PreparedDataFollowsTheFolderTest(absltest.TestCase):

  def test_changed_label_file_is_checked_again(self):
    tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, tmp, True)
    root = os.path.join(tmp, "mc")
    r = _cli.run_module("sdeseg_jax.data.minicity", "--out", root,
                        "--layout", "cityscapes", "--width", "16",
                        "--height", "8", "--train-sequences", "1",
                        "--val-sequences", "1", "--frames", "1",
                        "--workers", "1", "--quiet")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    args = (f"--config=configs/prepare.py:layout=cityscapes,path={root}",
            f"--workdir={os.path.join(tmp, 'work')}")
    before = _cli.tree_digest(root)
    r = _cli.run_main(*args)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertIn("train: 1 samples (1 labeled", r.stdout)
    self.assertEqual(_cli.tree_digest(root), before)  # Only read.
    label = os.path.join(root, _LABEL)
    Image.fromarray(np.full((8, 16), 200, np.uint8)).save(label)
    before = _cli.tree_digest(root)
    r = _cli.run_main(*args)
    self.assertEqual(r.returncode, 1, r.stderr[-2000:])
    self.assertIn(label, r.last_error_line)
    self.assertIn("label ids [200]", r.last_error_line)
    self.assertIn("changed since", r.stderr)
    self.assertEqual(_cli.tree_digest(root), before)
    # Needs the cli branch (main.py prints one message, no traceback).
    self.assertFalse(r.has_traceback, r.stderr[-2000:])


if __name__ == "__main__":
  absltest.main()
