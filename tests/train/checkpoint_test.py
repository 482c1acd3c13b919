"""Faults around checkpoints, on the toy task: a corrupt latest checkpoint,
a resume with another model or fewer steps, a background save that fails
(disk full). The command-line view of the same cases is
tests/cli/catalogue_test.py."""

import errno
import glob
import os
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy  # noqa: E402  pylint: disable=g-import-not-at-top

from sdeseg_jax import errors  # noqa: E402
from sdeseg_jax.train import checkpoint as ckpt_lib  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from tests.cli import _cli  # noqa: E402


def _config(num_steps=6, width=4, **train):
  c = toy.config(num_steps, **train)
  c.model = mlc.ConfigDict({"width": width, "name": "toy"})  # saved, compared
  return c


def _fit(config, workdir, it=None):
  return trainer.fit(config, workdir, task=toy.ToyTask(),
                     train_iter=toy.train_iter() if it is None else it,
                     example_batch=toy.example_batch())


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.params, state.batch_stats, state.opt_state))]


class _Counting:
  """Counts the batches a run takes."""

  def __init__(self, it):
    self.iterator, self.n = it, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.n += 1
    return next(self.iterator)


class CheckpointFaultsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # One 6-step run (checkpoints 3 and 6), copied by each test.
    cls.base = tempfile.mkdtemp()
    cls.final = _leaves(_fit(_config(), cls.base))

  def _copy(self):
    import shutil  # pylint: disable=g-import-not-at-top
    d = os.path.join(self.create_tempdir().full_path, "w")
    shutil.copytree(self.base, d)
    return d

  def test_corrupt_latest_falls_back_and_is_kept_aside(self):
    workdir = self._copy()
    files = sorted(glob.glob(os.path.join(
        workdir, "checkpoints", "6", "state", "**", "*"), recursive=True),
                   key=lambda p: os.path.getsize(p) if os.path.isfile(p)
                   else -1)
    with open(files[-1], "r+b") as f:
      f.truncate(os.path.getsize(files[-1]) // 2)
    bad = _cli.tree_digest(os.path.join(workdir, "checkpoints", "6"))
    with self.assertLogs("absl", "WARNING") as logs:
      state = _fit(_config(), workdir)
    text = "\n".join(logs.output)
    self.assertRegex(text, r"checkpoint 6 .* unreadable .*checkpoints_corrupt")
    self.assertIn("resumed from checkpoint 3", text)
    # Steps 4..6 were trained again from checkpoint 3: exact resume.
    for a, b in zip(_leaves(state), self.final):
      np.testing.assert_array_equal(a, b)
    # The bad checkpoint is kept, untouched, under checkpoints_corrupt/.
    aside = os.path.join(workdir, "checkpoints_corrupt", "6")
    self.assertEqual(_cli.tree_digest(aside), bad)
    self.assertEqual(ckpt_lib.Checkpointer(workdir).all_steps(), [3, 6])

  def test_no_readable_checkpoint_is_one_error(self):
    workdir = self._copy()
    for step in ("3", "6"):
      for p in glob.glob(os.path.join(workdir, "checkpoints", step, "state",
                                      "**", "*"), recursive=True):
        if os.path.isfile(p) and "ocdbt" in p:
          with open(p, "r+b") as f:
            f.truncate(1)
    with self.assertRaisesRegex(errors.CheckpointError,
                                "no readable checkpoint"):
      _fit(_config(), workdir)
    self.assertEqual(sorted(os.listdir(os.path.join(
        workdir, "checkpoints_corrupt"))), ["3", "6"])

  def test_other_model_is_refused_before_orbax_reads(self):
    workdir = self._copy()
    before = _cli.tree_digest(workdir)
    with mock.patch.object(ckpt_lib.Checkpointer, "_restore",
                           side_effect=AssertionError("orbax ran")):
      with self.assertRaisesRegex(
          errors.CheckpointError,
          r"another model \(config\.model\.width: 4 saved, 8 now\)"):
        _fit(_config(width=8), workdir)
    self.assertEqual(_cli.tree_digest(workdir), before)

  def test_other_state_shapes_are_refused_not_moved_aside(self):
    workdir = self._copy()
    config = _config()
    config.optim.name = "adam"  # another optimiser state, same model
    with self.assertRaisesRegex(errors.CheckpointError, "another state"):
      _fit(config, workdir)
    self.assertFalse(os.path.exists(os.path.join(workdir,
                                                 "checkpoints_corrupt")))

  def test_num_steps_below_the_checkpoint_is_refused(self):
    with self.assertRaisesRegex(
        errors.CheckpointError,
        r"checkpoint 6, beyond config\.train\.num_steps=2"):
      _fit(_config(num_steps=2), self._copy())

  def test_failed_background_save_stops_training(self):
    workdir = self.create_tempdir().full_path
    real = ocp.JsonCheckpointHandler._save_fn
    seen = []

    async def full_disk(handler, x, directory):
      seen.append(str(directory))
      if "3" in os.path.basename(os.path.dirname(str(directory))):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                      os.path.join(str(directory), "metadata"))
      return await real(handler, x, directory)

    it = _Counting(toy.train_iter())
    with mock.patch.object(ocp.JsonCheckpointHandler, "_save_fn", full_disk):
      with self.assertRaisesRegex(errors.CheckpointError,
                                  "no space left on device at .*metadata"):
        _fit(_config(num_steps=30, checkpoint_every=3), workdir, it)
    self.assertTrue(seen)
    # Stopped before the next checkpoint (step 6), not at the end (30).
    self.assertLess(it.n, 6)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    self.assertEqual(glob.glob(os.path.join(ckpt_dir, "*tmp*")), [])
    self.assertEqual(ckpt_lib.Checkpointer(workdir).all_steps(), [])


if __name__ == "__main__":
  absltest.main()
