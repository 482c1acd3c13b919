"""PAD-Net: zero-initialised attention gate and the distillation wiring."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models.decoders import UNetDecoder, decoder_kwargs
from sdeseg_jax.models.pad import PADNet, SelfAttention
from tests.models import _helpers as H




def _sub(v, name):
  return {col: tree[name] for col, tree in v.items() if name in tree}


class PADTest(absltest.TestCase):

  def test_self_attention_gate_is_half_at_init(self):
    sa = SelfAttention(8)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
    v = jax.jit(sa.init)(jax.random.key(1, impl="unsafe_rbg"), x)
    np.testing.assert_array_equal(v["params"]["attention"]["kernel"], 0.0)
    conv = jax.lax.conv_general_dilated(
        x, v["params"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(sa.apply(v, x), 0.5 * conv, atol=1e-6)

  def test_pad_init_gate_and_wiring(self):
    pad = PADNet("dec_tiny", num_classes=5)
    enc_ch = (8, 8, 16, 32, 64)
    rng = np.random.default_rng(0)
    feats = {f"f{k}": rng.normal(size=(2, 32 >> (k + 1) if k < 4 else 2,
                                       64 >> (k + 1) if k < 4 else 4, c)
                                 ).astype(np.float32)
             for k, c in enumerate(enc_ch)}
    # rbg keys: compiling threefry for every initialiser is slow on CPU.
    real = jax.jit(pad.init)(jax.random.key(0, impl="unsafe_rbg"), feats)
    for sa in ("sa_depth", "sa_seg"):
      np.testing.assert_array_equal(
          real["params"][sa]["attention"]["kernel"], 0.0)
    self.assertNotIn("dispconv_0", real["params"]["seg_dec"])
    self.assertIn("dispconv_0", real["params"]["depth_dec"])

    # Random (non-zero attention) weights: recompute PAD by hand.
    v = H.random_variables(pad, feats, seed=3)
    kw = decoder_kwargs("dec_tiny")
    dec = UNetDecoder(**kw)
    seg = UNetDecoder(**kw, enable_disp=False)
    sa = SelfAttention(kw["num_ch_dec"][2])

    @jax.jit
    def run(v):
      out = pad.apply(v, feats)
      d_head = dec.apply(_sub(v, "depth_dec"), feats, stages=(4, 3, 2))
      s_head = seg.apply(_sub(v, "seg_dec"), feats, stages=(4, 3, 2))
      dm, sm = d_head["upconv"][2], s_head["upconv"][2]
      d_tail = dec.apply(_sub(v, "depth_dec"), feats,
                         x=dm + sa.apply(_sub(v, "sa_seg"), sm),
                         stages=(1, 0))
      s_tail = seg.apply(_sub(v, "seg_dec"), feats,
                         x=sm + sa.apply(_sub(v, "sa_depth"), dm),
                         stages=(1, 0))
      head = lambda name, t: jnp.einsum(  # noqa: E731
          "bhwc,cd->bhwd", t, v["params"][name]["kernel"][0, 0]
      ) + v["params"][name]["bias"]
      return (out, d_head, d_tail, head("seg_final_head", s_tail["upconv"][0]),
              head("seg_intermediate_head", sm))

    out, d_head, d_tail, sem, inter = run(v)
    self.assertEqual(out["semantics"].shape, (2, 32, 64, 5))
    self.assertEqual(out["intermediate_semantics"].shape, (2, 8, 16, 5))
    np.testing.assert_allclose(out["semantics"], sem, atol=1e-4)
    np.testing.assert_allclose(out["intermediate_semantics"], inter,
                               atol=1e-4)
    np.testing.assert_allclose(out["disp"][0], d_tail["disp"][0], atol=1e-6)
    np.testing.assert_allclose(out["disp"][3], d_head["disp"][3], atol=1e-6)
    self.assertEqual(sorted(out["disp"]), [0, 1, 2, 3])


if __name__ == "__main__":
  absltest.main()
