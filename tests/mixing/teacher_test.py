"""Tests of the mean-teacher EMA formula."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.mixing import teacher


class EmaDecayTest(absltest.TestCase):

  def test_decay_values(self):
    steps = np.array([1, 2, 3, 10, 98, 99, 100, 5000])
    got = np.asarray(jax.vmap(teacher.ema_decay)(jnp.asarray(steps)))
    want = [0.5, 2 / 3, 0.75, 1 - 1 / 11, 1 - 1 / 99, 0.99, 0.99, 0.99]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # 0.99 is reached exactly at step 99 and not before.
    self.assertLess(float(teacher.ema_decay(98)), 0.99)

  def test_update_formula_and_dtype(self):
    ema = {"w": jnp.full((2,), 1.0), "b": jnp.ones((3,), jnp.bfloat16)}
    new = {"w": jnp.full((2,), 3.0), "b": jnp.full((3,), 2.0, jnp.bfloat16)}
    out = teacher.ema_update(ema, new, 0.75)
    np.testing.assert_allclose(out["w"], [1.5, 1.5])
    self.assertEqual(out["b"].dtype, jnp.bfloat16)
    np.testing.assert_allclose(out["b"].astype(jnp.float32), 1.25)

  def test_update_teacher_batch_stats_sources(self):
    ema_p, p = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    ema_bs, bs = {"mean": jnp.zeros(2)}, {"mean": jnp.ones(2)}
    fwd = {"mean": jnp.full((2,), 0.3)}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step_fn(step, ema_p, ema_bs):
      return teacher.update_teacher(step, ema_p, p, ema_bs, bs)

    for step in (1, 2, 3):
      ema_p, ema_bs = step_fn(jnp.int32(step), ema_p, ema_bs)
    # 0 -> 0.5 -> 2/3*0.5 + 1/3 -> 0.75*(2/3) + 0.25 = 0.75.
    np.testing.assert_allclose(ema_p["w"], 0.75, rtol=1e-6)
    # "own" without a train-mode teacher forward: statistics unchanged.
    np.testing.assert_array_equal(ema_bs["mean"], 0.0)
    zero = {"mean": jnp.zeros(2)}
    got = {src: teacher.update_teacher(
        1, {"w": jnp.zeros(2)}, p, zero, bs, batch_stats_source=src,
        forward_batch_stats=fwd)[1]["mean"]
           for src in teacher.BATCH_STATS_SOURCES}
    # own: what the teacher's forward produced; ema: 0.5 * 0 + 0.5 * 1;
    # student: the student's statistics.
    np.testing.assert_allclose(got["own"], 0.3)
    np.testing.assert_allclose(got["ema"], 0.5)
    np.testing.assert_allclose(got["student"], 1.0)

  def test_bad_batch_stats_source(self):
    with self.assertRaisesRegex(ValueError, "ema_batch_stats"):
      teacher.update_teacher(1, {}, {}, None, None, batch_stats_source="ema")
    with self.assertRaisesRegex(ValueError,
                                "teacher_batch_stats='averaged'"):
      teacher.update_teacher(1, {}, {}, {}, {},
                             batch_stats_source="averaged")


if __name__ == "__main__":
  absltest.main()
