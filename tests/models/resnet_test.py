"""ResNetEncoder: shapes, and parity with a torchvision-structured ResNet."""

import copy

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models import pretrained
from sdeseg_jax.models.resnet import ResNetEncoder, num_ch_enc
from tests.models import _helpers as H


TR = H.load_torch_ref()


def _shapes(enc, x_shape):
  v = jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros(x_shape))
  out = jax.eval_shape(enc.apply, v, jnp.zeros(x_shape))
  return {k: tuple(a.shape) for k, a in out.items()}


class ShapesTest(parameterized.TestCase):

  @parameterized.parameters(
      (10, 16, 32, 64, 1, (8, 8, 16, 32, 64)),
      (18, 32, 32, 64, 1, (64, 64, 128, 256, 512)),
      (50, 32, 64, 64, 1, (64, 256, 512, 1024, 2048)),
      (10, 16, 32, 64, 2, (8, 8, 16, 32, 64)))
  def test_output_strides(self, depth, os_, h, w, n_img, chans):
    width = chans[0]
    enc = ResNetEncoder(depth, os_, num_input_images=n_img, width=width)
    shapes = _shapes(enc, (2, h, w, 3 * n_img))
    strides = (2, 4, 8, 16, os_)
    for k in range(5):
      self.assertEqual(shapes[f"f{k}"],
                       (2, h // strides[k], w // strides[k], chans[k]))
    if os_ == 16:
      self.assertEqual(shapes["f3"][1:3], shapes["f4"][1:3])
    self.assertEqual(num_ch_enc(depth, width), chans)

  def test_resnet101_os16_eval_shape(self):
    enc = ResNetEncoder(101, 16)
    shapes = _shapes(enc, (1, 512, 512, 3))
    self.assertEqual(shapes["f0"], (1, 256, 256, 64))
    self.assertEqual(shapes["f3"], (1, 32, 32, 1024))
    self.assertEqual(shapes["f4"], (1, 32, 32, 2048))
    v = jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    self.assertLen(v["params"], 2 + 3 + 4 + 23 + 3)
    # torchvision OS16: layer4 block 0 keeps a (stride-1) downsample.
    self.assertIn("downsample_0", v["params"]["layer4_0"])

  def test_bad_input_channels(self):
    enc = ResNetEncoder(10, 32, num_input_images=2, width=8)
    with self.assertRaisesRegex(ValueError, "6 input channels"):
      enc.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))

  def test_frozen_bn_keeps_stats(self):
    enc = ResNetEncoder(10, 32, width=8, frozen_bn=True)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    v = H.random_variables(enc, x)
    _, upd = enc.apply(v, x, True, mutable=["batch_stats"])
    chex_equal = jax.tree.map(np.array_equal, upd["batch_stats"],
                              v["batch_stats"])
    self.assertTrue(all(jax.tree.leaves(chex_equal)))
    enc2 = ResNetEncoder(10, 32, width=8)
    _, upd2 = enc2.apply(v, x, True, mutable=["batch_stats"])
    self.assertFalse(np.allclose(upd2["batch_stats"]["bn1"]["mean"],
                                 v["batch_stats"]["bn1"]["mean"]))


@absltest.skipIf(TR is None, "torch not installed")
class TorchParityTest(parameterized.TestCase):

  @parameterized.parameters((18, 32), (50, 16))
  def test_matches_torch(self, depth, os_):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(depth)
    gen = torch.Generator().manual_seed(depth)
    block = TR.Bottleneck if depth == 50 else TR.BasicBlock
    layers = (3, 4, 6, 3) if depth == 50 else (2, 2, 2, 2)
    net = TR.ResNet(block, layers, (False, False, os_ == 16))
    TR.randomize_bn(net, gen)
    sd = TR.state_dict_numpy(net)
    variables = pretrained.resnet_variables(sd, depth)
    enc = ResNetEncoder(depth, os_)
    x = np.random.default_rng(depth).uniform(size=(2, 64, 64, 3)).astype(
        np.float32)

    fn = jax.jit(lambda v, x, train: enc.apply(
        v, x, train, mutable=["batch_stats"]), static_argnums=2)
    xt = H.nhwc_to_torch(x)

    # Eval mode: running statistics, max abs diff <= 1e-4 in fp32.
    net.eval()
    with torch.no_grad():
      ref = net.features(xt)
    out, _ = fn(variables, x, False)
    for k in range(5):
      np.testing.assert_allclose(out[f"f{k}"], H.nchw(ref[k]), atol=1e-4,
                                 rtol=0, err_msg=f"f{k} eval")

    # Train mode: batch statistics over 2x2x2 .. 2x32x32 values amplify
    # rounding, so deep features of torch fp32 itself are ~1e-3 off a fp64
    # run. Compare against torch fp64 with a bound relative to torch fp32's
    # own error.
    net.train()
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
      ref32 = net.features(xt)
      ref64 = net64.features(xt.double())
    out, upd = fn(variables, x, True)
    for k in range(5):
      r64 = H.nchw(ref64[k])
      torch_err = np.abs(H.nchw(ref32[k]) - r64).max()
      jax_err = np.abs(np.asarray(out[f"f{k}"], np.float64) - r64).max()
      self.assertLessEqual(jax_err, max(1e-4, 2.0 * torch_err), f"f{k}")
    # Running statistics: torch's update uses the unbiased batch variance.
    new = pretrained.resnet_variables(
        TR.state_dict_numpy(net64.float()), depth)
    flat_new = jax.tree.leaves_with_path(new["batch_stats"])
    flat_upd = dict(jax.tree.leaves_with_path(upd["batch_stats"]))
    for path, want in flat_new:
      np.testing.assert_allclose(flat_upd[path], want, rtol=1e-3, atol=1e-4,
                                 err_msg=jax.tree_util.keystr(path))
    # The update must actually have happened (not a no-op).
    self.assertFalse(np.allclose(upd["batch_stats"]["bn1"]["var"],
                                 variables["batch_stats"]["bn1"]["var"]))

if __name__ == "__main__":
  absltest.main()
