"""The 1-vs-4-device equality of the SSL step, once with XLA's optimisation
passes on (the other multi-device tests of real steps compile without them,
``_fixtures.cheap_compiles``, to save compile time): fusion and code
generation on a sharded program must not change what the step computes
beyond float rounding."""

from absl.testing import absltest
import jax
import numpy as np

from sdeseg_jax.train import ssl
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding
from tests.train import ssl_test


def _host(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


class OptimizedDevicesTest(absltest.TestCase):

  def test_one_vs_four_devices_with_xla_optimisations(self):
    self.assertFalse(jax.config.read("jax_disable_most_optimizations"))
    config = ssl_test._config()  # pylint: disable=protected-access
    task = ssl.SSLTask(config)
    batches = ssl_test._host_batches(2)  # pylint: disable=protected-access
    create = trainer.create_state_fn(task, config,
                                     trainer.abstract_batch(batches[0]))
    shapes = jax.eval_shape(create)
    # One initialisation (on 4 devices), copied to the 1-device mesh.
    mesh4 = sharding.make_mesh(jax.devices()[:4])
    init = jax.jit(create, out_shardings=step_lib.state_sharding(
        shapes, mesh4))()
    host = jax.device_get(init).replace(tx=shapes.tx)
    results = {}
    for n in (1, 4):
      mesh = sharding.make_mesh(jax.devices()[:n])
      state = jax.device_put(host, step_lib.state_sharding(shapes, mesh))
      jstep = step_lib.jit_train_step(task, config, mesh, shapes)
      losses = []
      for b in batches:
        state, m = jstep(state, sharding.host_to_global(b, mesh))
        m = jax.device_get(m)
        self.assertEqual(float(m["finite"]), 1.0)
        losses.append(float(m["loss"]))
      results[n] = (losses, _host((state.params, state.ema_params,
                                   state.batch_stats)))
    np.testing.assert_allclose(results[1][0], results[4][0], rtol=2e-5)
    for x, y in zip(results[1][1], results[4][1]):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6)
    # The steps changed the parameters (the equality is not vacuous).
    before = _host((host.params, host.ema_params, host.batch_stats))
    self.assertTrue(any(not np.array_equal(a, b)
                        for a, b in zip(before, results[1][1])))


if __name__ == "__main__":
  absltest.main()
