"""Tests of the SSL mode on a tiny model and a tiny generated MiniCity.

One config (the DepthMix row: transfer head, mean teacher, DepthMix on the
rendered depth with ground-truth mixing, kornia04 strong augmentation) and
one jitted step per mesh are shared by the tests, since compiling the step
dominates their cost on a CPU.
"""

import os
import re
import sys
import tempfile

from absl.testing import absltest
import chex
import jax
from jax.experimental.compilation_cache import compilation_cache
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import ssl_minicity  # noqa: E402
from sdeseg_jax.data import minicity  # noqa: E402
from sdeseg_jax.train import checkpoint as ckpt_lib  # noqa: E402
from sdeseg_jax.train import ssl  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding  # noqa: E402

_CACHE = {}
_STEPS = 40
_JAX_CACHE_FLAGS = ("jax_compilation_cache_dir",
                    "jax_persistent_cache_min_compile_time_secs")
_SAVED_FLAGS = {}


def setUpModule():
  # Compiling dominates these tests on a CPU. The end-to-end run builds the
  # same state-init and step computations as the step tests (same config,
  # same mesh), so a persistent compilation cache, private to this module
  # and restored afterwards, lets it reuse their executables.
  for k in _JAX_CACHE_FLAGS:
    _SAVED_FLAGS[k] = getattr(jax.config, k)
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compilation_cache.reset_cache()


def tearDownModule():
  for k, v in _SAVED_FLAGS.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


def _config(**train):
  config = ssl_minicity.get_config("row=depthmix,runlocal")
  # 4 labeled + 4 mixed images: divisible by the 4 fake devices.
  config.train.update(batch_size=4, **train)
  config.ssl.unlabeled_batch_size = 4
  # Faster learning for a few dozen steps of a randomly initialised net
  # (SGD with momentum, clip 10 as the reference).
  config.optim.update(lr=0.02, groups=(("encoder/.*", 0.02),),
                      step_size=_STEPS)
  return config


def _data():
  if "data" not in _CACHE:
    root = tempfile.mkdtemp()
    path = os.path.join(root, "mc")
    minicity.generate(path, "cityscapes", 0, width=64, height=32,
                      num_train_sequences=8, num_val_sequences=2, log=None)
    _CACHE["data"] = (root, path, os.path.join(root, "tfds"))
  return _CACHE["data"]


def _host_batches(n):
  """``n`` host (numpy) batches {labeled, unlabeled} of the shared config."""
  if "batches" not in _CACHE:
    _, path, tfds_dir = _data()
    its = ssl.make_train_iterators(_config(), path, None, tfds_dir)
    _CACHE["batches"] = [jax.device_get(next(its)) for _ in range(3)]
    its.close()
  return _CACHE["batches"][:n]


def _step_for(mesh_size):
  """(task, config, mesh, create, jitted step) for a mesh; built once."""
  key = ("step", mesh_size)
  if key not in _CACHE:
    config = _config()
    task = ssl.SSLTask(config)
    mesh = sharding.make_mesh(jax.devices()[:mesh_size])
    batch = _host_batches(1)[0]
    create = trainer.create_state_fn(task, config,
                                     trainer.abstract_batch(batch))
    shapes = jax.eval_shape(create)
    st = step_lib.state_sharding(shapes, mesh)
    # The state is donated, so each test builds its own with ``create``.
    if mesh_size == 4:
      create_jit = jax.jit(create, out_shardings=st)
    else:  # the same initial values, without compiling the init again
      host = jax.device_get(_step_for(4)[3]()).replace(tx=shapes.tx)
      create_jit = lambda: jax.device_put(host, sharding.replicated(mesh))
    # assert_max_traces: any retrace of the step (a recompile) fails. The
    # wrapper keeps the name train_step so that the lowered module equals
    # the one trainer.fit builds (compilation cache hit).
    def train_step(state, batch):
      return step_lib.train_step(state, batch, task=task, config=config)
    fn = chex.assert_max_traces(train_step, n=1)
    jstep = jax.jit(fn, donate_argnums=(0,),
                    in_shardings=(st, sharding.data_sharding(mesh)),
                    out_shardings=(st, sharding.replicated(mesh)))
    _CACHE[key] = (task, config, mesh, create_jit, jstep, shapes)
  return _CACHE[key]


def _host(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


class SSLStepTest(absltest.TestCase):

  def test_batch_and_state(self):
    b = _host_batches(1)[0]
    self.assertEqual(b["labeled"]["color_aug"].shape, (4, 1, 32, 32, 3))
    self.assertEqual(b["unlabeled"]["depth"].shape, (4, 32, 32))
    # The labeled stream has only labeled images; the unlabeled one is the
    # union (mix_use_gt), so it has at least as many images.
    self.assertTrue(b["labeled"]["is_labeled"].all())
    task, _, _, create, _, _ = _step_for(4)
    state = create()
    self.assertIsNotNone(state.ema_params)
    self.assertIn("seg_head", state.params)
    self.assertNotIn("pose", state.params)

  def test_one_vs_four_devices_same_steps_and_no_recompiles(self):
    results = {}
    for n in (1, 4):
      _, _, mesh, create, jstep, _ = _step_for(n)
      state = create()
      metrics = []
      for b in _host_batches(3):
        state, m = jstep(state, sharding.host_to_global(b, mesh))
        metrics.append(jax.device_get(m))
      results[n] = (state, metrics)
    (s1, m1), (s4, m4) = results[1], results[4]
    for a, b in zip(m1, m4):
      self.assertEqual(float(a["finite"]), 1.0)
      # Same keys -> same masks, augmentation and confidence weights.
      self.assertEqual(float(a["mask_mean"]), float(b["mask_mean"]))
      self.assertEqual(float(a["q"]), float(b["q"]))
      np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5)
    self.assertGreater(float(m1[0]["mix_loss"]), 0.0)
    self.assertLess(float(m1[0]["mask_mean"]), 1.0)
    for x, y in zip(_host((s1.params, s1.ema_params, s1.batch_stats)),
                    _host((s4.params, s4.ema_params, s4.batch_stats))):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6)
    # The teacher moved, but stayed apart from the student.
    p, e = _host(s1.params), _host(s1.ema_params)
    self.assertTrue(any(not np.array_equal(a, b) for a, b in zip(p, e)))

  def test_exact_resume_including_teacher_and_both_streams(self):
    _, path, tfds_dir = _data()
    _, config, mesh, create, jstep, shapes = _step_for(4)

    def run(state, its, n):
      for _ in range(n):
        state, _ = jstep(state, next(its))
      return state

    full = run(create(), ssl.make_train_iterators(config, path, mesh,
                                                  tfds_dir), 4)
    workdir = tempfile.mkdtemp()
    ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
    its = ssl.make_train_iterators(config, path, mesh, tfds_dir)
    half = run(create(), its, 2)
    ckpt.save(2, half, its, config)
    ckpt.wait()
    del half
    fresh_its = ssl.make_train_iterators(config, path, mesh, tfds_dir)
    restored = ckpt.restore(
        None, ckpt_lib.abstract_like(shapes, sharding.replicated(mesh)),
        fresh_its)
    ckpt.close()
    self.assertEqual(int(restored.step), 2)
    resumed = run(restored, fresh_its, 2)
    for name in ("params", "ema_params", "batch_stats", "opt_state", "step"):
      for x, y in zip(_host(getattr(full, name)),
                      _host(getattr(resumed, name))):
        np.testing.assert_array_equal(x, y, err_msg=name)


class SSLRunTest(absltest.TestCase):

  def test_short_run_raises_miou_and_writes_tables(self):
    root, path, tfds_dir = _data()
    config = _config(num_steps=_STEPS, eval_every=_STEPS // 2,
                     image_every=_STEPS, checkpoint_every=_STEPS,
                     log_every=10)
    # Evaluated on the 8 training images: this checks that the mode learns
    # (a few dozen steps cannot generalise to MiniCity's val split).
    config.eval.update(batch_size=4, num_batches=0, split="train")
    config.data.tfds_dir = tfds_dir
    for k in ("labeled", "unlabeled", "val", "val_full"):
      config.data[k].path = path
    workdir = os.path.join(root, "run")
    open(path + ".done", "w").close()  # MiniCity is already generated
    ssl.run(config, workdir)
    tables = os.path.join(workdir, "iou_tables")
    self.assertEqual(
        sorted(os.listdir(tables)),
        ["paper_iou_best_student.md", "paper_iou_best_teacher.md",
         "paper_iou_final.md", f"paper_iou_step{_STEPS // 2}.md",
         f"paper_iou_step{_STEPS}.md"])

    def miou(name, model):
      text = open(os.path.join(tables, name)).read()
      row = [l for l in text.splitlines() if l.startswith(f"| {model} ")]
      return float(re.split(r"\s*\|\s*", row[0].strip("| "))[-1])

    # The untrained model: the run's own initial state (same seed).
    task, _, mesh, create, _, _ = _step_for(4)
    untrained = create()
    ev_fn, _ = ssl.make_eval_fns(task, config, mesh, path, tfds_dir,
                                 tempfile.mkdtemp())
    before = ev_fn(untrained)["paper/student/miou"] * 100
    final = miou("paper_iou_final.md", "student")
    self.assertLess(before, 5.0)
    self.assertGreater(final, before + 5.0, (before, final))
    self.assertGreater(final, 2 * before, (before, final))
    # The final and the best-so-far tables are kept apart.
    best = open(os.path.join(tables, "paper_iou_best_student.md")).read()
    self.assertRegex(best, r"\| student \(step \d+\) \|")
    self.assertIn("teacher", open(os.path.join(
        tables, "paper_iou_final.md")).read())


if __name__ == "__main__":
  absltest.main()
