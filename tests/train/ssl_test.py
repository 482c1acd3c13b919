"""Tests of the SSL mode on a tiny model and a tiny generated MiniCity.

One config (the DepthMix row: transfer head, mean teacher, DepthMix on the
rendered depth with ground-truth mixing, kornia04 strong augmentation) and
one jitted step per mesh are shared by the tests, since compiling the step
dominates their cost on a CPU.
"""

import contextlib
import json
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
from sdeseg_jax.mixing import teacher as teacher_lib  # noqa: E402
from sdeseg_jax.train import ssl  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402
from sdeseg_jax.train import toolkit  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding  # noqa: E402
from tests import _fixtures  # noqa: E402

_CACHE = {}
_STEPS = 40
_JAX_CACHE_FLAGS = ("jax_compilation_cache_dir",
                    "jax_persistent_cache_min_compile_time_secs")
_SAVED_FLAGS = {}
_CHEAP = contextlib.ExitStack()


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
  # What these tests assert (equalities between runs compiled alike, the
  # rise of mIoU) holds without XLA's optimisation passes, which take most
  # of the compile time on a CPU.
  _CHEAP.enter_context(_fixtures.cheap_compiles())


def tearDownModule():
  _CHEAP.close()
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
    its = ssl.make_train_iterators(_config(), path, tfds_dir)
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
    for x, y in zip(_host((s1.params, s1.ema_params, s1.batch_stats,
                           s1.ema_batch_stats)),
                    _host((s4.params, s4.ema_params, s4.batch_stats,
                           s4.ema_batch_stats))):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6)
    # The teacher moved, but stayed apart from the student.
    p, e = _host(s1.params), _host(s1.ema_params)
    self.assertTrue(any(not np.array_equal(a, b) for a, b in zip(p, e)))

  def test_exact_resume_including_teacher_and_both_streams(self):
    _, path, tfds_dir = _data()
    _, config, mesh, create, jstep, shapes = _step_for(4)

    def run(state, its, n):
      for _ in range(n):
        state, _ = jstep(state, sharding.host_to_global(next(its), mesh))
      return state

    full = run(create(), ssl.make_train_iterators(config, path, tfds_dir), 4)
    workdir = tempfile.mkdtemp()
    ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
    its = ssl.make_train_iterators(config, path, tfds_dir)
    half = run(create(), its, 2)
    ckpt.save(2, half, its, config)
    ckpt.wait()
    del half
    fresh_its = ssl.make_train_iterators(config, path, tfds_dir)
    restored = ckpt.restore(
        None, ckpt_lib.abstract_like(shapes, sharding.replicated(mesh)),
        fresh_its)
    ckpt.close()
    self.assertEqual(int(restored.step), 2)
    resumed = run(restored, fresh_its, 2)
    for name in ("params", "ema_params", "batch_stats", "ema_batch_stats",
                 "opt_state", "step"):
      for x, y in zip(_host(getattr(full, name)),
                      _host(getattr(resumed, name))):
        np.testing.assert_array_equal(x, y, err_msg=name)


class TeacherStatisticsTest(absltest.TestCase):
  """``config.train.teacher_batch_stats='own'`` (the reference, default)."""

  def test_teacher_keeps_the_statistics_of_its_own_forward(self):
    task, config, mesh, create, jstep, _ = _step_for(1)
    self.assertEqual(config.train.teacher_batch_stats, "own")
    self.assertEqual(config.mix.teacher_mode, "train")
    state = create()
    before = jax.device_get((state.ema_params, state.ema_batch_stats))
    b = _host_batches(1)[0]
    state, _ = jstep(state, sharding.host_to_global(b, mesh))
    after = jax.device_get(state)
    # The teacher's forward on the unmixed unlabeled centre frames, from
    # its pre-step parameters and statistics. The encoder's statistics do
    # not depend on the dropout draw (dropout comes later, in the ASPP).
    img = b["unlabeled"]["color_aug"][:, 0].astype(np.float32) / 255.0
    _, want = jax.jit(teacher_lib.teacher_probs, static_argnums=(0, 4))(
        task.model, before, img, jax.random.PRNGKey(0), "train")
    want = jax.device_get(want)
    got_enc = _host(after.ema_batch_stats["encoder"])
    for x, y in zip(got_enc, _host(want["encoder"])):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Not the student's statistics, not their average, not the old ones.
    ema = jax.tree.map(lambda e, s: 0.5 * e + 0.5 * s, before[1]["encoder"],
                       after.batch_stats["encoder"])
    for other in (after.batch_stats["encoder"], ema, before[1]["encoder"]):
      diff = max(float(np.max(np.abs(x - y)))
                 for x, y in zip(got_enc, _host(other)))
      self.assertGreater(diff, 1e-4)
    # Every teacher statistic moved (decoders too: ASPP, head).
    for x, y in zip(_host(after.ema_batch_stats), _host(before[1])):
      self.assertFalse(np.array_equal(x, y))
    # Evaluating the teacher uses them.
    models = toolkit.models_to_evaluate(after)
    self.assertIs(models["teacher"]["batch_stats"], after.ema_batch_stats)
    self.assertIs(models["student"]["batch_stats"], after.batch_stats)


def _mtl_config(**ssl_overrides):
  """The 212 row with the SDE loss off, so that the mixed forward is the
  only one that can run the pose net. Smaller than 212 where it does not
  matter here, to keep the compile short: the transfer head without a depth
  decoder, mask = 1, no strong augmentation."""
  config = ssl_minicity.get_config("row=mtl_depthmix,runlocal")
  config.ssl.update(sde_weight=0.0, sde_on_unlabeled=False, **ssl_overrides)
  config.model.update(seg_head="transfer", depth=False)
  config.mix.update(mask="none", augment="none")
  return config


def _mtl_batch():
  rng = np.random.default_rng(3)
  b, h, w = 2, 32, 32
  img = lambda: rng.integers(0, 256, (b, 3, h, w, 3), dtype=np.uint8)
  lbl = lambda: rng.integers(0, 19, (b, h, w)).astype(np.int32)
  return {"labeled": {"color_aug": img(), "label": lbl()},
          "unlabeled": {"color_aug": img(), "label": lbl(),
                        "is_labeled": np.array([True, False])}}


def _mtl_init(model, batch):
  """Variables of the 212 net (compiled once: eager init is slow)."""
  if "mtl_init" not in _CACHE:
    x = batch["labeled"]["color_aug"] / 255.0
    init = jax.jit(lambda r: model.init({"params": r}, x, (-1, 0, 1),
                                        train=False))
    _CACHE["mtl_init"] = jax.device_get(init(jax.random.PRNGKey(0)))
  return _CACHE["mtl_init"]


class MixedPoseTest(absltest.TestCase):
  """As in the reference's 212, the mixed forward also runs the pose net
  (config.ssl.mixed_pose); only the pose encoder's BatchNorm statistics
  change."""

  def test_pose_statistics_move_only_with_mixed_pose(self):
    self.assertTrue(ssl_minicity.get_config(
        "row=mtl_depthmix").ssl.mixed_pose)
    self.assertFalse(ssl_minicity.get_config("row=depthmix").ssl.mixed_pose)
    batch = _mtl_batch()
    results = {}
    for on in (False, True):
      task = ssl.SSLTask(_mtl_config(mixed_pose=on))
      v = _mtl_init(task.model, batch)
      teacher = (v["params"], v["batch_stats"])
      loss, aux = jax.jit(task.loss_fn)(
          v["params"], v["batch_stats"], batch, jax.random.PRNGKey(1),
          0, teacher=teacher)
      results[on] = jax.device_get((loss, aux, v["batch_stats"]))
    (l_off, aux_off, init), (l_on, aux_on, _) = results[False], results[True]
    pose = lambda t: _host(t["pose"])
    for x, y in zip(pose(aux_off[0]), pose(init)):
      np.testing.assert_array_equal(x, y)
    for x, y in zip(pose(aux_on[0]), pose(init)):
      self.assertFalse(np.allclose(x, y))
    # One pose forward per pair on (mixed centre, unlabeled neighbours):
    # with mask = 1 and no augmentation the mixed centre is the unlabeled
    # one, so a train-mode forward on the unlabeled frames gives the same
    # pose statistics (labeled neighbours, say, would not).
    fwd = jax.jit(lambda v, x: task.model.apply(
        v, x, (-1, 0, 1), train=True, rngs={"dropout": jax.random.PRNGKey(2)},
        mutable=["batch_stats"])[1]["batch_stats"])
    v = _mtl_init(task.model, batch)
    want = fwd(v, batch["unlabeled"]["color_aug"] / 255.0)
    # Separately compiled programs: about 1e-6 apart.
    for x, y in zip(pose(aux_on[0]), pose(want)):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    wrong = fwd(v, batch["labeled"]["color_aug"] / 255.0)
    self.assertGreater(max(float(np.max(np.abs(x - y))) for x, y in zip(
        pose(aux_on[0]), pose(wrong))), 1e-3)
    # Nothing else changes: outputs unused, the rest of the net identical
    # (up to float rounding: the two programs are compiled separately).
    np.testing.assert_allclose(l_off, l_on, rtol=1e-6)
    for k in set(init) - {"pose"}:
      for x, y in zip(_host(aux_off[0][k]), _host(aux_on[0][k])):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7, err_msg=k)
    # The teacher's own statistics came back updated (train mode).
    self.assertFalse(all(np.array_equal(x, y) for x, y in zip(
        _host(aux_off[2]["encoder"]), _host(init["encoder"]))))

  def test_config_errors(self):
    config = ssl_minicity.get_config("row=depthmix,runlocal")
    config.ssl.mixed_pose = True  # a net without a pose net
    with self.assertRaisesRegex(ValueError, "mixed_pose.*model.pose=True"):
      ssl.SSLTask(config)
    config = _mtl_config()
    config.mix.teacher_mode = "eval"
    with self.assertRaisesRegex(ValueError, "teacher_batch_stats='own'"):
      ssl.SSLTask(config)
    config.train.teacher_batch_stats = "student"
    ssl.SSLTask(config)


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
    ssl.run(config, workdir)
    out = os.path.join(workdir, "eval", "segmentation")
    self.assertEqual(
        sorted(os.listdir(out)),
        ["latest.json", f"step_{_STEPS // 2}.json", f"step_{_STEPS // 2}.md",
         f"step_{_STEPS}.json", f"step_{_STEPS}.md"])

    def miou(name, model):
      text = open(os.path.join(out, name)).read()
      row = [l for l in text.splitlines() if l.startswith(f"| {model} ")]
      return float(re.split(r"\s*\|\s*", row[0].strip("| "))[-1])

    # The untrained model: the run's own initial state (same seed).
    task, _, mesh, create, _, _ = _step_for(4)
    untrained = create()
    (ev,) = ssl.make_evaluators(task, config, mesh, path, tfds_dir, "")
    before = ev.evaluate(toolkit.models_to_evaluate(untrained),
                         0)["student/miou"]
    final = miou(f"step_{_STEPS}.md", "student")
    self.assertLess(before, 5.0)
    self.assertGreater(final, before + 5.0, (before, final))
    self.assertGreater(final, 2 * before, (before, final))
    # The final and the best-so-far figures are kept apart, and the best
    # so far is in the checkpoint (a resumed run continues from it).
    latest = json.load(open(os.path.join(out, "latest.json")))
    self.assertEqual(latest["step"], _STEPS)
    self.assertAlmostEqual(latest["miou"], final, places=1)
    self.assertGreaterEqual(latest["best_miou"], latest["miou"])
    self.assertIn(latest["best_step"], (_STEPS // 2, _STEPS))
    self.assertIn("miou_teacher", latest)
    saved = ckpt_lib.Checkpointer(workdir).restore_eval_state()
    self.assertAlmostEqual(saved["segmentation"]["best"]["student"],
                           latest["best_miou"])


if __name__ == "__main__":
  absltest.main()
