"""mode=select end to end on a tiny MiniCity pool, its resume, its errors,
and an SSL config training from one of its lists."""

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdeseg_jax.data import pipeline
from sdeseg_jax.data.readers import DatasetError
from sdeseg_jax.models import joint
from sdeseg_jax.selection import program
from sdeseg_jax.train import checkpoint as ckpt_lib
from tests import _fixtures


def _save_teacher(model_cfg, directory):
  """A randomly initialised SDE teacher checkpoint (shapes are what the
  program checks; the features need not be good)."""
  model = joint.from_config(model_cfg)
  key = jax.random.PRNGKey(0)
  v = jax.jit(lambda k: model.init(
      {"params": k, "dropout": k}, jnp.zeros((1, 1, 32, 64, 3)), (0,),
      train=False, pose=False))(key)
  ck = ckpt_lib.Checkpointer(directory, async_save=False)
  ck.save(0, {"params": v["params"], "batch_stats": v["batch_stats"]}, None,
          _fixtures.load_config("select_minicity", "runlocal", lock=False))
  ck.wait()
  ck.close()


@pytest.fixture(scope="module")
def pool():
  tmp, root, _ = _fixtures.generate_minicity(8, 2)
  teacher = os.path.join(tmp, "teacher")
  _save_teacher(_fixtures.load_config("select_minicity", "runlocal").
                teacher_model, teacher)
  yield tmp, root, teacher
  shutil.rmtree(tmp, ignore_errors=True)


def _config(root, teacher, tfds, extra=""):
  return _fixtures.load_config(
      "select_minicity", f"runlocal,path={root},teacher={teacher}" + extra,
      lock=False)


def _lists(workdir):
  out = {}
  for n in (2, 4, 6):
    with open(program.list_path(workdir, n)) as f:
      out[n] = json.load(f)
  return out


def test_select_end_to_end_resume_and_ssl(pool, monkeypatch):
  tmp, root, teacher = pool
  tfds = os.path.join(tmp, "tfds")
  cfg = _config(root, teacher, tfds)
  cfg.data.tfds_dir = tfds
  a = os.path.join(tmp, "run_a")
  with _fixtures.cheap_compiles():
    summary = program.run(cfg, a)
    lists = _lists(a)
    # Prefix-consistent, no repeats, inside the pool, the seed image first.
    assert lists[4][:2] == lists[2] and lists[6][:4] == lists[4]
    assert len(set(lists[6])) == 6 and all(0 <= i < 8 for i in lists[6])
    assert lists[2][0] == int(np.random.RandomState(42).permutation(8)[0])
    assert [r["n"] for r in summary["rounds"]] == [2, 4, 6]
    assert summary["rounds"][1]["student_steps"] == 2
    assert np.isfinite(summary["rounds"][1]["student_loss"])
    ratios = [r for r in summary["rounds"][2]["class_pixel_ratio"]
              if r is not None]
    assert ratios and all(0 <= r <= 1 for r in ratios)
    with open(os.path.join(a, "selection_summary.json")) as f:
      assert json.load(f)["method"] == "ds_us"

    # The same run, killed (SIGTERM) during round 1's student, then rerun.
    # It starts from run_a's caches, pseudo depth and rounds 0-1 (valid:
    # same pool, teacher and config), so only round 1's student trains.
    b = os.path.join(tmp, "run_b")
    for f in ("selection_cache.npz", "distances.npy", "selection_config.json",
              "nlabels2_subset.json", "nlabels4_subset.json",
              "rounds/round0.json", "rounds/round1.json",
              "students/round0/scores.npz"):
      os.makedirs(os.path.dirname(os.path.join(b, f)), exist_ok=True)
      shutil.copy(os.path.join(a, f), os.path.join(b, f))
    shutil.copytree(os.path.join(a, "pseudo_depth"),
                    os.path.join(b, "pseudo_depth"))
    fit = program.trainer.fit

    def killing_fit(config, workdir, *, train_iter, **kw):
      if not workdir.endswith("round1"):
        return fit(config, workdir, train_iter=train_iter, **kw)

      class Kill:
        def __init__(self, it):
          self.it, self.iterator = it, it.iterator

        def __next__(self):
          os.kill(os.getpid(), signal.SIGTERM)
          return next(self.it)
      return fit(config, workdir, train_iter=Kill(train_iter), **kw)

    monkeypatch.setattr(program.trainer, "fit", killing_fit)
    with pytest.raises(program.Interrupted, match="rerun"):
      program.run(cfg, b)
    assert not os.path.exists(program.list_path(b, 6))
    monkeypatch.setattr(program.trainer, "fit", fit)
    program.run(cfg, b)
    assert _lists(b) == lists
    za = np.load(os.path.join(a, "students", "round1", "scores.npz"))
    zb = np.load(os.path.join(b, "students", "round1", "scores.npz"))
    np.testing.assert_array_equal(za["scores"], zb["scores"])
    np.testing.assert_array_equal(za["losses"], zb["losses"])

    # A finished workdir reruns as a no-op with the same lists; another
    # method in it is refused.
    program.run(cfg, a)
    assert _lists(a) == lists
    other = _config(root, teacher, tfds, ",method=random")
    other.data.tfds_dir = tfds
    with pytest.raises(ValueError, match="new --workdir"):
      program.run(other, a)

    # An SSL config trains from the 4-image list.
    from sdeseg_jax.train import ssl  # pylint: disable=g-import-not-at-top
    ssl_cfg = _fixtures.load_config(
        "ssl_minicity", f"runlocal,row=baseline,path={root},select="
        f"{program.list_path(a, 6)},labels=4", lock=False)
    ssl_cfg.data.tfds_dir = tfds
    ssl_cfg.train.batch_size = 4  # one image per fake device
    assert ssl_cfg.data.labeled.subset.mode == "fixed"
    s = ssl_cfg.data.labeled
    ids = pipeline.labeled_indices(s, 8)
    np.testing.assert_array_equal(ids, sorted(lists[4]))
    ssl.run(ssl_cfg, os.path.join(tmp, "ssl"))
    assert ckpt_lib.Checkpointer(os.path.join(tmp, "ssl")).latest_step() == 4


def test_bad_inputs_are_refused(pool, tmp_path):
  tmp, root, teacher = pool
  cfg = _config(root, teacher, "")
  # Missing teacher checkpoint.
  cfg.select.teacher.checkpoint = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="config.select.teacher"):
    program.load_teacher(cfg)
  # A teacher of another architecture (width 8 instead of 16).
  wrong = str(tmp_path / "wrong")
  m = _config(root, teacher, "").teacher_model
  m.width = 8
  _save_teacher(m, wrong)
  cfg.select.teacher.checkpoint = wrong
  with pytest.raises(ValueError, match="not a checkpoint of "
                     "config.teacher_model"):
    program.load_teacher(cfg)
  # A pool smaller than the schedule.
  with pytest.raises(ValueError, match="only 5 training images"):
    program.check_pool_size(cfg, 5)
  # A stale feature cache (made for 5 images, the pool now has 8).
  work = tmp_path / "w"
  work.mkdir()
  np.savez(work / "selection_cache.npz", pooled=np.zeros((5, 4, 8, 2)),
           class_counts=np.zeros((5, 19)),
           meta=np.asarray(json.dumps({"n": 5})))
  stream = program.pool_stream(cfg, root)
  with pytest.raises(ValueError, match="stale"):
    program.features_and_distances(cfg, str(work), {"step": 0}, stream,
                                   None, "", 8)
  # Bad method / schedule.
  cfg.select.method = "best"
  with pytest.raises(ValueError, match="config.select.method"):
    program.check_config(cfg)
  cfg.select.method = "ds"
  cfg.select.schedule = (4, 2)
  with pytest.raises(ValueError, match="increasing"):
    program.check_config(cfg)


def test_fixed_lists_that_do_not_fit_are_refused(tmp_path):
  from configs import common  # pylint: disable=g-import-not-at-top
  s = common.stream_config("x", "cityscapes")
  f = tmp_path / "nlabels4_subset.json"
  s.subset.mode, s.subset.file = "fixed", str(f)
  f.write_text(json.dumps([3, 1, 7, 0]))
  s.subset.n = 2  # prefix: the 2-image selection
  np.testing.assert_array_equal(pipeline.labeled_indices(s, 8), [1, 3])
  s.subset.n = 6
  with pytest.raises(DatasetError, match="nlabels4_subset.json: holds 4"):
    pipeline.labeled_indices(s, 8)
  s.subset.n = 0
  with pytest.raises(DatasetError, match="outside"):
    pipeline.labeled_indices(s, 5)
  f.write_text(json.dumps([3, 3]))
  with pytest.raises(DatasetError, match="repeats"):
    pipeline.labeled_indices(s, 8)
