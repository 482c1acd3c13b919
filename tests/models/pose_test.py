"""PoseDecoder / PoseNet: parity with the monodepth2 decoder, pair order."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models import pretrained
from sdeseg_jax.models.joint import pose_outputs
from sdeseg_jax.models.pose import PoseDecoder, PoseNet
from tests.models import _helpers as H


TR = H.load_torch_ref()


class PoseTest(absltest.TestCase):

  @absltest.skipIf(TR is None, "torch not installed")
  def test_decoder_matches_torch(self):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    ref = TR.PoseDecoder(512)
    # Scale the last layer up so the x0.01 outputs are not tiny.
    with torch.no_grad():
      ref.net[3].weight.mul_(50.0)
    sd = TR.state_dict_numpy(ref)
    variables = pretrained.pose_decoder_variables(sd)
    f4 = np.random.default_rng(1).uniform(size=(3, 2, 4, 512)).astype(
        np.float32)
    with torch.no_grad():
      want_a, want_t = ref(H.nhwc_to_torch(f4))
    got_a, got_t = PoseDecoder().apply(variables, f4)
    self.assertEqual(got_a.shape, (3, 3))
    self.assertEqual(got_a.dtype, jnp.float32)
    np.testing.assert_allclose(got_a, want_a.numpy(), atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(got_t, want_t.numpy(), atol=1e-6, rtol=1e-4)
    self.assertGreater(np.abs(got_t).max(), 1e-4)

  def test_pairs_are_in_temporal_order(self):
    net = PoseNet(depth=10, width=8)
    images = jax.random.uniform(jax.random.key(0), (2, 3, 32, 32, 3))
    v = H.random_variables(net, jnp.zeros((2, 32, 32, 6)))

    @jax.jit
    def run(v):
      out = net.apply(
          v, method=lambda m: pose_outputs(m, images, (-1, 0, 1), False))
      cat = lambda a, b: jnp.concatenate([images[:, a], images[:, b]], -1)
      return (out, net.apply(v, cat(0, 1)), net.apply(v, cat(1, 2)),
              net.apply(v, cat(1, 0)))

    out, prev, nxt, swapped = run(v)
    np.testing.assert_allclose(out["axisangle"][-1], prev[0], atol=1e-7)
    np.testing.assert_allclose(out["translation"][1], nxt[1], atol=1e-7)
    self.assertFalse(np.allclose(out["axisangle"][-1], swapped[0]))
    self.assertEqual(sorted(out["axisangle"]), [-1, 1])


if __name__ == "__main__":
  absltest.main()
