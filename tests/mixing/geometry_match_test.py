"""Tests of the Matching Geometry Sampling criterion."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.mixing import geometry_match


class GeometryMatchTest(absltest.TestCase):

  def test_margins(self):
    self.assertEqual(geometry_match.crop_margins(512), (80, 100))
    self.assertEqual(geometry_match.crop_margins(256), (40, 50))
    self.assertEqual(geometry_match.crop_margins(32), (5, 6))   # 6.25 -> 6

  def _inputs(self):
    h, w = 32, 8                    # top 5 rows, bottom 6 rows excluded
    tgt = jnp.full((2, h, w), 0.5)
    c0 = jnp.full((h, w), 0.5).at[:5].set(1.0).at[-6:].set(0.0)
    c1 = jnp.full((h, w), 0.3)
    c2 = jnp.full((h, w), 0.6)
    src = jnp.stack([jnp.stack([c1, c0, c2]), jnp.stack([c1, c2, c2 * 1.5])])
    return tgt, src

  def test_reference_criterion_by_hand(self):
    tgt, src = self._inputs()
    dist = geometry_match.geometry_distance(tgt, src, "reference")
    frac = (32 - 5 - 6) / 32        # zeroed rows stay in the denominator
    want0 = [abs(np.log(1.5) - np.log(1.3)) * frac, 0.0,
             abs(np.log(1.5) - np.log(1.6)) * frac]
    np.testing.assert_allclose(dist[0], want0, rtol=1e-5, atol=1e-7)

  def test_paper_criterion_by_hand(self):
    tgt, src = self._inputs()
    dist = geometry_match.geometry_distance(tgt, src, "paper")
    inv = lambda s: 0.01 + (10.0 - 0.01) * s      # disp_to_depth(0.1, 100)
    g = lambda a, b: abs(np.log1p(inv(a)) - np.log1p(inv(b))) * 21 / 32
    np.testing.assert_allclose(dist[1], [g(.5, .3), g(.5, .6), g(.5, .9)],
                               rtol=1e-5)

  def test_select_gathers_pytree(self):
    tgt, src = self._inputs()
    cands = {
        "disp": src,
        "label": jnp.arange(6, dtype=jnp.int32).reshape(2, 3, 1, 1) *
                 jnp.ones((1, 1, 4, 4), jnp.int32),
        "image": jnp.arange(6.0).reshape(2, 3, 1, 1, 1) * jnp.ones(
            (1, 1, 4, 4, 3)),
    }
    # One trace per criterion, none for the repeated calls.
    fn = jax.jit(chex.assert_max_traces(n=2)(geometry_match.select_matching),
                 static_argnames=("criterion",))
    for crit in geometry_match.CRITERIA * 2:
      chosen, idx, _ = fn(tgt, src, cands, criterion=crit)
      # Image 0: the candidate equal to the target inside the rows used;
      # image 1: 0.6 is closer to 0.5 than 0.3 and 0.9 in both criteria.
      np.testing.assert_array_equal(idx, [1, 1])
      np.testing.assert_array_equal(chosen["label"][:, 0, 0], [1, 4])
      np.testing.assert_array_equal(chosen["image"][:, 0, 0, 0], [1.0, 4.0])
      np.testing.assert_array_equal(chosen["disp"], src[:, 1])

  def test_criteria_can_disagree_with_mixed_scales(self):
    # With raw values the target at 0.05 is nearer 0.0 than 0.2; the paper's
    # inverse-depth map is affine so it keeps the same order here, but the
    # distances differ in size.
    tgt = jnp.full((1, 16, 4), 0.05)
    src = jnp.stack([jnp.full((16, 4), 0.0), jnp.full((16, 4), 0.2)])[None]
    d_ref = geometry_match.geometry_distance(tgt, src, "reference")
    d_pap = geometry_match.geometry_distance(tgt, src, "paper")
    self.assertEqual(int(jnp.argmin(d_ref)), 0)
    self.assertFalse(np.allclose(d_ref, d_pap))

  def test_bad_inputs(self):
    with self.assertRaisesRegex(ValueError, "criterion"):
      geometry_match.geometry_distance(jnp.zeros((1, 4, 4)),
                                       jnp.zeros((1, 2, 4, 4)), "log")
    with self.assertRaisesRegex(ValueError, r"\[B, K, H, W\]"):
      geometry_match.geometry_distance(jnp.zeros((1, 4, 4)),
                                       jnp.zeros((1, 4, 4)))


if __name__ == "__main__":
  absltest.main()
