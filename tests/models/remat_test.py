"""Rematerialisation (``config.model.remat``) changes memory, not results."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from sdeseg_jax.models import joint
from sdeseg_jax.models import layers

OFFSETS = (-1, 0, 1)


def _loss_and_grads(policy, variables, x):
  cfg = common.model_config("tiny", remat=policy)
  model = joint.from_config(cfg)

  def loss(params):
    out, upd = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x,
        OFFSETS, train=True, rngs={"dropout": jax.random.key(1)},
        mutable=["batch_stats"])
    value = (jnp.mean(out["semantics"] ** 2) + jnp.mean(out["disp"][0]) +
             jnp.mean(out["translation"][1] ** 2) +
             jnp.mean(out["intermediate_semantics"]))
    return value, upd["batch_stats"]

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  jaxpr = jax.make_jaxpr(grad_fn)(variables["params"])
  compiled = jax.jit(grad_fn).lower(variables["params"]).compile()
  (value, stats), grads = compiled(variables["params"])
  return value, stats, grads, str(jaxpr), compiled.memory_analysis()


class RematTest(absltest.TestCase):

  def test_every_policy_gives_the_same_loss_gradients_and_statistics(self):
    x = jax.random.uniform(jax.random.key(0), (2, 3, 32, 64, 3))
    model = joint.from_config(common.model_config("tiny"))
    variables = jax.jit(lambda x: model.init(
        {"params": jax.random.key(2)}, x, OFFSETS, train=False))(x)
    base = _loss_and_grads("none", variables, x)
    self.assertEqual(base[3].count("remat"), 0)
    counts = {}
    for policy in layers.REMAT_POLICIES[1:]:
      value, stats, grads, jaxpr, mem = _loss_and_grads(policy, variables, x)
      counts[policy] = jaxpr.count("remat")
      self.assertGreater(counts[policy], 0, policy)
      np.testing.assert_allclose(value, base[0], rtol=1e-5, err_msg=policy)
      self.assertEqual(jax.tree.structure(grads),
                       jax.tree.structure(base[2]))
      for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(base[2])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6,
                                   err_msg=policy)
      for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(base[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                   err_msg=policy)
      if policy == "full":
        full_temp = mem.temp_size_in_bytes
    # The tiny net's encoders have four stages of one block each: one
    # rematerialised call per stage (or block); full adds every decoder
    # block and the pose encoder's four blocks.
    self.assertEqual(counts["encoder_stage"], 4)
    self.assertEqual(counts["encoder_block"], 4)
    self.assertGreater(counts["decoder_block"], 4)
    self.assertEqual(counts["full"], counts["encoder_block"] +
                     counts["decoder_block"] + 4)
    self.assertLess(full_temp, base[4].temp_size_in_bytes)

  def test_unknown_policy_names_the_config_key(self):
    with self.assertRaisesRegex(ValueError, "config.model.remat='all'"):
      joint.from_config(common.model_config("tiny", remat="all"))


if __name__ == "__main__":
  absltest.main()
