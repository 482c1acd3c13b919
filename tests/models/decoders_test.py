"""UNetDecoder / ASPP: stage shapes of the reference and parity with torch."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models import pretrained
from sdeseg_jax.models.aspp import ASPP
from sdeseg_jax.models.decoders import UNetDecoder, decoder_kwargs
from tests.models import _helpers as H


TR = H.load_torch_ref()
R101_CH = (64, 256, 512, 1024, 2048)


def _feats(h, w, chans, os_, rng=None):
  strides = (2, 4, 8, 16, os_)
  shapes = [(2, h // s, w // s, c) for s, c in zip(strides, chans)]
  if rng is None:
    return {f"f{k}": jnp.zeros(s) for k, s in enumerate(shapes)}
  return {f"f{k}": rng.normal(size=s).astype(np.float32)
          for k, s in enumerate(shapes)}


class ShapesTest(parameterized.TestCase):

  @parameterized.parameters(
      # name, output stride, upconv 4..0 channels
      ("dec6", 16, (256, 256, 128, 128, 64)),
      ("dec11", 32, (256, 128, 64, 32, 16)),
      ("dec9", 16, (256, 128, 128, 64, 64)))
  def test_stage_shapes(self, name, os_, chans):
    h, w = 64, 128
    dec = UNetDecoder(**decoder_kwargs(name))
    feats = _feats(h, w, R101_CH, os_)
    v = jax.eval_shape(dec.init, jax.random.key(0), feats)
    out = jax.eval_shape(dec.apply, v, feats)
    # Stage 4 ends at 1/16 in both cases: with OS32 the ASPP output is
    # upsampled to f3's size (dec11 table row).
    for i, c in zip((4, 3, 2, 1, 0), chans):
      s = 2**i
      self.assertEqual(out["upconv"][i].shape, (2, h // s, w // s, c))
    for s in range(4):
      self.assertEqual(out["disp"][s].shape, (2, h >> s, w >> s, 1))
      self.assertEqual(out["disp"][s].dtype, jnp.float32)
    self.assertEqual(v["params"]["upconv_4_1"]["conv"]["kernel"].shape[2],
                     chans[0] + R101_CH[3])
    self.assertEqual("bn" in v["params"]["upconv_3_1"], name == "dec9")

  def test_unknown_variant(self):
    with self.assertRaisesRegex(ValueError, "unknown decoder variant 'dec7'"):
      decoder_kwargs("dec7")

  def test_stage_split_equals_full_run(self):
    dec = UNetDecoder(**decoder_kwargs("dec_tiny"))
    feats = _feats(32, 64, (8, 8, 16, 32, 64), 16, np.random.default_rng(0))
    v = H.random_variables(dec, feats)
    full = dec.apply(v, feats)
    head = dec.apply(v, feats, stages=(4, 3, 2))
    self.assertEqual(sorted(head["upconv"]), [2, 3, 4])
    self.assertEqual(sorted(head["disp"]), [2, 3])
    tail = dec.apply(v, feats, x=head["upconv"][2], stages=(1, 0))
    for i in (1, 0):
      np.testing.assert_allclose(tail["upconv"][i], full["upconv"][i],
                                 atol=1e-6)
      np.testing.assert_allclose(tail["disp"][i], full["disp"][i], atol=1e-6)
    with self.assertRaisesRegex(ValueError, "pass x"):
      dec.apply(v, feats, stages=(1, 0))
    with self.assertRaisesRegex(ValueError, "consecutive"):
      dec.apply(v, feats, stages=(4, 2))


@absltest.skipIf(TR is None, "torch not installed")
class TorchParityTest(parameterized.TestCase):

  @parameterized.parameters(("dec_tiny", 16), ("dec9", 32))
  def test_decoder_matches_torch(self, name, os_):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    kw = decoder_kwargs(name)
    enc_ch = (8, 8, 16, 32, 64)
    ref = TR.DepthDecoder(enc_ch, kw["num_ch_dec"], kw["aspp_rates"],
                          kw["batch_norm"])
    TR.randomize_bn(ref, torch.Generator().manual_seed(1))
    ref.eval()
    sd = {k: v for k, v in TR.state_dict_numpy(ref).items()
          if k.startswith("decoder.")}
    variables = pretrained.decoder_variables(sd, decoder=name,
                                             encoder_channels=enc_ch)
    feats = _feats(32, 64, enc_ch, os_, np.random.default_rng(2))
    with torch.no_grad():
      want = ref([H.nhwc_to_torch(feats[f"f{k}"]) for k in range(5)])
    got = UNetDecoder(**kw).apply(variables, feats)
    for i in range(5):
      np.testing.assert_allclose(got["upconv"][i], H.nchw(want[("upconv", i)]),
                                 atol=1e-5, err_msg=f"upconv{i}")
    for s in range(4):
      np.testing.assert_allclose(got["disp"][s], H.nchw(want[("disp", s)]),
                                 atol=1e-6, err_msg=f"disp{s}")

  def test_aspp_train_mode_matches_torch(self):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(3)
    ref = TR.ASPP(16, (1, 2, 3), 8)
    TR.randomize_bn(ref, torch.Generator().manual_seed(4))
    ref.project[3].p = 0.0  # dropout would need a shared mask
    ref.train()
    sd = TR.state_dict_numpy(ref)
    m = ASPP((1, 2, 3), 8, dropout_rate=0.0)
    x = np.random.default_rng(5).normal(size=(2, 6, 10, 16)).astype(np.float32)
    expected = jax.eval_shape(m.init, jax.random.key(0), x)
    variables = pretrained.convert(dict(expected), sd,
                                   pretrained.dotted_torch_path)
    with torch.no_grad():
      want = ref(H.nhwc_to_torch(x))
    got, upd = m.apply(variables, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(got, H.nchw(want), atol=1e-5)
    # The pooling-branch BN normalises 2 values per channel (as in the
    # reference) and updates its running variance with the unbiased variance.
    np.testing.assert_allclose(
        upd["batch_stats"]["convs_4_2"]["var"],
        ref.convs[4][2].running_var.numpy(), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
