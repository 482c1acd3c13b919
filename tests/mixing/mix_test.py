"""Tests of mixing, GT teacher targets and the cross-domain mix."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.mixing import masks
from sdeseg_jax.mixing import mix
from sdeseg_jax.mixing import pseudo_label


class MixTest(absltest.TestCase):

  def test_mix_all_kinds_identically(self):
    mask = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])            # [2, 1, 2]
    img_a = jnp.arange(12.0).reshape(2, 1, 2, 3)
    img_b = -img_a
    lab_a = jnp.array([[[1, 2]], [[3, 4]]], jnp.int32)
    lab_b = lab_a + 10
    out = mix.mix(mask, {"img": img_a, "lab": lab_a},
                  {"img": img_b, "lab": lab_b})
    np.testing.assert_array_equal(out["img"][0, 0, 0], img_a[0, 0, 0])
    np.testing.assert_array_equal(out["img"][0, 0, 1], img_b[0, 0, 1])
    np.testing.assert_array_equal(out["lab"], [[[1, 12]], [[13, 4]]])
    self.assertEqual(out["lab"].dtype, jnp.int32)

  def test_mix_with_partner_matches_reference_formula(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 5, 2)).astype(np.float32)
    m = (rng.uniform(size=(4, 3, 5)) > 0.5).astype(np.float32)
    partner = masks.pair_partner_index(4)
    got = mix.mix_with_partner(jnp.asarray(m), jnp.asarray(x), partner)
    want = np.stack([m[i, ..., None] * x[i] +
                     (1 - m[i, ..., None]) * x[i ^ 1] for i in range(4)])
    np.testing.assert_allclose(got, want)

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, "leading"):
      mix.mix(jnp.ones((2, 3, 4)), jnp.ones((2, 4, 3)), jnp.ones((2, 4, 3)))


class GroundTruthTargetsTest(absltest.TestCase):

  def test_labeled_ignore_becomes_250_after_mixing(self):
    c = 3
    probs = jnp.broadcast_to(jnp.array([0.1, 0.7, 0.2]), (2, 1, 3, c))
    labels = jnp.array([[[2, 250, 0]], [[250, 250, 250]]], jnp.int32)
    is_labeled = jnp.array([True, False])
    mask = jnp.array([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])
    fn = jax.jit(chex.assert_max_traces(n=1)(mix.mix_teacher_targets))
    conf, lab = fn(mask, probs, masks.pair_partner_index(2), labels,
                   is_labeled)
    # Image 0: GT 2 (conf 1); labeled-ignore -> P'=0 -> 250; pixel 2 from
    # the unlabeled image 1 -> teacher argmax 1 with 0.7.
    np.testing.assert_array_equal(lab[0], [[2, 250, 1]])
    np.testing.assert_allclose(conf[0], [[1.0, 0.0, 0.7]], rtol=1e-6)
    # Image 1: own teacher pixel, then GT of image 0 (ignore and class 0).
    np.testing.assert_array_equal(lab[1], [[1, 250, 0]])
    np.testing.assert_allclose(conf[1], [[0.7, 0.0, 1.0]], rtol=1e-6)
    # Without GT the labels are teacher argmaxes everywhere.
    _, lab = mix.mix_teacher_targets(mask, probs, masks.pair_partner_index(2))
    np.testing.assert_array_equal(lab, np.ones((2, 1, 3)))

  def test_needs_both_gt_args(self):
    with self.assertRaisesRegex(ValueError, "is_labeled"):
      mix.mix_teacher_targets(jnp.ones((2, 1, 1)), jnp.ones((2, 1, 1, 3)),
                              masks.pair_partner_index(2),
                              labels=jnp.zeros((2, 1, 1), jnp.int32))


class PseudoLabelTest(absltest.TestCase):

  def test_q_reference_vs_paper(self):
    conf = jnp.array([[[0.968, 0.99]], [[0.5, 0.968]]], jnp.float32)
    # Reference: one q for the batch with ">=": 3 of 4 pixels.
    self.assertAlmostEqual(float(pseudo_label.confidence_weight(conf)), 0.75)
    # Paper Eq. 11: per image with ">": [1/2, 0].
    np.testing.assert_allclose(
        pseudo_label.confidence_weight(conf, per_image=True), [0.5, 0.0])
    w = pseudo_label.pixel_weights(conf, per_image=True)
    np.testing.assert_allclose(w, [[[0.5, 0.5]], [[0.0, 0.0]]])
    np.testing.assert_allclose(pseudo_label.pixel_weights(conf), 0.75)

  def test_zero_probability_gives_ignore(self):
    probs = jnp.array([[[[0.0, 0.0], [0.3, 0.7]]]])
    conf, lab = pseudo_label.pseudo_labels_from_probs(probs)
    np.testing.assert_array_equal(lab, [[[250, 1]]])
    np.testing.assert_allclose(conf, [[[0.0, 0.7]]])


class CrossDomainTest(absltest.TestCase):

  def test_targets_weights_and_mix(self):
    probs = jnp.stack([
        jnp.broadcast_to(jnp.array([0.98, 0.01, 0.01]), (1, 4, 3)),
        jnp.array([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8],
                    [0.0, 0.99, 0.01], [0.9, 0.05, 0.05]]]),
    ])                                                     # [2, 1, 4, 3]
    trg_gt = jnp.array([[[1, 250, 2, 1]], [[250] * 4]], jnp.int32)
    conf, y_t = pseudo_label.target_pseudo_labels(
        probs, trg_gt, jnp.array([True, False]))
    np.testing.assert_array_equal(y_t, [[[1, 250, 2, 1]], [[1, 2, 1, 0]]])
    # Labeled image: confidence 1 everywhere, its ignore pixel included.
    np.testing.assert_allclose(conf[0], 1.0)
    mask = jnp.array([[[1.0, 0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0, 0.0]]])
    w = pseudo_label.cross_domain_pixel_weights(mask, conf)
    q_t = 5 / 8                 # 4 labeled + the 0.99 pixel, of 8
    np.testing.assert_allclose(
        w, [[[1, q_t, q_t, 1]], [[q_t, 1, q_t, q_t]]], rtol=1e-6)
    src_lab = jnp.array([[[7, 7, 7, 250]], [[8, 8, 8, 8]]], jnp.int32)
    src_img = jnp.ones((2, 1, 4, 3))
    out = mix.cross_domain_mix(mask, {"lab": src_lab, "img": src_img},
                               {"lab": y_t, "img": jnp.zeros((2, 1, 4, 3))})
    np.testing.assert_array_equal(out["lab"],
                                  [[[7, 250, 2, 250]], [[1, 8, 1, 0]]])
    np.testing.assert_array_equal(out["img"][..., 0], mask)

  def test_cross_domain_depth_mask_with_sign_flip(self):
    d_src = jnp.array([[[0.50, 0.49]], [[0.50, 0.49]]])
    d_trg = jnp.full((2, 1, 2), 0.51)
    m = masks.depth_compare_mask(d_src, d_trg, jnp.array([0.03, -0.03]))
    np.testing.assert_array_equal(m, [[[1, 1]], [[0, 0]]])


if __name__ == "__main__":
  absltest.main()
