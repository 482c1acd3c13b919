"""Tests of the shared engine on a toy task: sharding, recompiles, NaN stop,
preemption and exact resume (4 fake CPU devices, see tests/conftest.py)."""

import os
import signal
import subprocess
import sys
import tempfile

from absl.testing import absltest
import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy  # noqa: E402  pylint: disable=g-import-not-at-top

from sdeseg_jax.train import checkpoint as ckpt_lib  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding  # noqa: E402

_TOY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy.py")


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.params, state.batch_stats, state.opt_state))]


def _assert_bitwise(test, a, b):
  test.assertEqual(len(a), len(b))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


class _NaNAt(toy.ToyTask):
  """Loss becomes NaN at (0-based) step ``bad``."""

  def __init__(self, bad):
    super().__init__()
    self.bad = bad

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    loss, aux = super().loss_fn(params, batch_stats, batch, rng, step)
    return jnp.where(step == self.bad, jnp.nan, loss), aux


class _SigtermAt(grain.transforms.Map):
  """Sends SIGTERM to this process while building batch ``n`` (1-based)."""

  def __init__(self, n):
    self.n, self.count = n, 0

  def map(self, batch):
    self.count += 1
    if self.count == self.n:
      os.kill(os.getpid(), signal.SIGTERM)
    return batch


def _init_state(mesh, config):
  create = trainer.create_state_fn(
      toy.ToyTask(), config, trainer.abstract_batch(toy.example_batch()))
  shapes = jax.eval_shape(create)
  state = jax.jit(create, out_shardings=step_lib.state_sharding(
      shapes, mesh))()
  return state, shapes


class EngineTest(absltest.TestCase):

  def test_four_devices_match_one_device_and_no_recompiles(self):
    self.assertEqual(jax.device_count(), 4)
    config = toy.config()
    results = {}
    for n in (4, 1):
      mesh = sharding.make_mesh(jax.devices()[:n])
      state, shapes = _init_state(mesh, config)
      task = toy.ToyTask()

      @chex.assert_max_traces(n=1)
      def fn(state, batch):
        return step_lib.train_step(state, batch, task=task, config=config)

      st = step_lib.state_sharding(shapes, mesh)
      jstep = jax.jit(fn, donate_argnums=(0,),
                      in_shardings=(st, sharding.data_sharding(mesh)),
                      out_shardings=(st, sharding.replicated(mesh)))
      it = toy.train_iter()
      losses = []
      for _ in range(4):
        batch = sharding.host_to_global(next(it), mesh)
        self.assertLen(batch["x"].sharding.device_set, n)
        state, metrics = jstep(state, batch)
        losses.append(float(metrics["loss"]))
      chex.clear_trace_counter()
      self.assertLen(state.params["head"]["kernel"].sharding.device_set, n)
      results[n] = (losses, _leaves(state))
    np.testing.assert_allclose(results[4][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[4][1], results[1][1]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Training did something (so the equality above is not vacuous).
    self.assertLess(results[1][0][-1], results[1][0][0])

  def test_nan_stops_and_keeps_last_good_checkpoint(self):
    workdir = tempfile.mkdtemp()
    config = toy.config(num_steps=8)  # checkpoints every 3 steps
    with self.assertRaisesRegex(FloatingPointError,
                                r"step 5 .*Last good checkpoint: step 3"):
      trainer.fit(config, workdir, task=_NaNAt(bad=4),
                  train_iter=toy.train_iter(),
                  example_batch=toy.example_batch())
    ckpt = ckpt_lib.Checkpointer(workdir)
    self.assertEqual(ckpt.all_steps(), [3])
    _, shapes = _init_state(sharding.make_mesh(), config)
    restored = ckpt.restore(None, ckpt_lib.abstract_like(
        shapes, sharding.replicated(sharding.make_mesh())))
    self.assertEqual(int(restored.step), 3)
    self.assertTrue(all(np.isfinite(x).all() for x in _leaves(restored)))

  def test_sigterm_saves_exits_and_resumes_exactly(self):
    config = toy.config(num_steps=6, checkpoint_every=100)
    ref = trainer.fit(config, tempfile.mkdtemp(), task=toy.ToyTask(),
                      train_iter=toy.train_iter(),
                      example_batch=toy.example_batch())
    workdir = tempfile.mkdtemp()
    it = iter(toy.dataset().map(_SigtermAt(3)).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
    state = trainer.fit(config, workdir, task=toy.ToyTask(), train_iter=it,
                        example_batch=toy.example_batch())
    # The signal arrived while fetching batch 3: step 3 finishes and saves.
    self.assertEqual(int(state.step), 3)
    self.assertEqual(ckpt_lib.Checkpointer(workdir).all_steps(), [3])
    self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
    resumed = trainer.fit(config, workdir, task=toy.ToyTask(),
                          train_iter=toy.train_iter(),
                          example_batch=toy.example_batch())
    self.assertEqual(int(resumed.step), 6)
    self.assertEqual(jax.tree.structure(resumed.opt_state),
                     jax.tree.structure(ref.opt_state))
    _assert_bitwise(self, _leaves(resumed), _leaves(ref))

  def test_sigkill_after_checkpoint_then_resume_is_bitwise_exact(self):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    ref_dir, dir_ = tempfile.mkdtemp(), tempfile.mkdtemp()
    subprocess.run([sys.executable, _TOY, ref_dir, "7"], env=env, check=True,
                   capture_output=True)
    # Killed (SIGKILL) while fetching the batch after step 4, once the
    # step-3 checkpoint is on disk.
    killed = subprocess.run([sys.executable, _TOY, dir_, "7", "3"], env=env,
                            capture_output=True)
    self.assertEqual(killed.returncode, -signal.SIGKILL,
                     killed.stderr.decode()[-2000:])
    self.assertFalse(os.path.exists(os.path.join(dir_, "final.npz")))
    self.assertEqual(ckpt_lib.Checkpointer(dir_).latest_step(), 3)
    subprocess.run([sys.executable, _TOY, dir_, "7"], env=env, check=True,
                   capture_output=True)
    a = np.load(os.path.join(ref_dir, "final.npz"))
    b = np.load(os.path.join(dir_, "final.npz"))
    self.assertEqual(sorted(a.files), sorted(b.files))
    for k in a.files:
      np.testing.assert_array_equal(a[k], b[k])

  def test_mean_teacher_follows_reference_formula(self):
    config = toy.config(num_steps=3, use_ema=True, ema_decay=0.6,
                        checkpoint_every=0, log_every=0)
    mesh = sharding.make_mesh()
    state, shapes = _init_state(mesh, config)
    jstep = step_lib.jit_train_step(toy.ToyTask(), config, mesh, shapes)
    it = toy.train_iter()
    ema = jax.device_get(state.ema_params)
    for t in range(1, 4):
      state, _ = jstep(state, sharding.host_to_global(next(it), mesh))
      alpha = min(1 - 1 / (t + 1), 0.6)
      ema = jax.tree.map(lambda e, p: alpha * e + (1 - alpha) * p, ema,
                         jax.device_get(state.params))
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                   jax.device_get(state.ema_params), ema)
    # Parameters only: the teacher's BN statistics stay at their init.
    np.testing.assert_array_equal(state.ema_batch_stats["bn"]["mean"], 0.0)


if __name__ == "__main__":
  absltest.main()
