"""Tests of the reference cross-entropy semantics and pixel-wise entropy."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.losses import segmentation
from tests.losses._reference import normal, torch, uniform

if torch is not None:
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top


_LN2 = np.log(2.0)
_LN43 = np.log(4.0 / 3.0)


def _three_pixels():
  # Pixel 0: uniform over 2 classes, label 0 -> ln 2.
  # Pixel 1: p(class 1) = 3/4, label 1 -> ln(4/3).
  # Pixel 2: ignored.
  logits = jnp.array([[[[0.0, 0.0], [0.0, np.log(3.0)], [5.0, -5.0]]]])
  labels = jnp.array([[[0, 1, 250]]], jnp.int32)
  return logits, labels


class CrossEntropyTest(absltest.TestCase):

  def test_mean_over_valid_pixels(self):
    logits, labels = _three_pixels()
    np.testing.assert_allclose(
        segmentation.cross_entropy(logits, labels), (_LN2 + _LN43) / 2,
        rtol=1e-6)

  def test_pixel_weights_count_ignored_pixels_in_denominator(self):
    logits, labels = _three_pixels()
    weights = jnp.array([[[0.5, 2.0, 7.0]]])
    np.testing.assert_allclose(
        segmentation.cross_entropy(logits, labels, pixel_weights=weights),
        (0.5 * _LN2 + 2.0 * _LN43 + 0.0) / 3, rtol=1e-6)
    # A scalar confidence q, as the pseudo-label loss uses.
    np.testing.assert_allclose(
        segmentation.cross_entropy(logits, labels, pixel_weights=0.25),
        0.25 * (_LN2 + _LN43) / 3, rtol=1e-6)

  def test_all_ignored_is_zero_not_nan(self):
    logits, _ = _three_pixels()
    labels = jnp.full((1, 1, 3), 250, jnp.int32)
    self.assertEqual(float(segmentation.cross_entropy(logits, labels)), 0.0)
    grad = jax.grad(segmentation.cross_entropy)(logits, labels)
    np.testing.assert_array_equal(grad, 0.0)

  def test_custom_ignore_index(self):
    logits, _ = _three_pixels()
    labels = jnp.array([[[0, 1, 255]]], jnp.int32)
    np.testing.assert_allclose(
        segmentation.cross_entropy(logits, labels, ignore_index=255),
        (_LN2 + _LN43) / 2, rtol=1e-6)

  def test_weights_are_not_differentiated(self):
    logits, labels = _three_pixels()
    grad = jax.grad(
        lambda w: segmentation.cross_entropy(logits, labels, pixel_weights=w)
    )(jnp.ones((1, 1, 3)))
    np.testing.assert_array_equal(grad, 0.0)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_upsampled_logits_match_torch(self):
    logits = normal(0, (2, 5, 7, 4))
    labels = np.random.default_rng(1).integers(0, 4, (2, 9, 13))
    labels[:, :3, :2] = 250
    ours = segmentation.cross_entropy(logits, labels)
    up = F.interpolate(
        torch.tensor(np.asarray(logits)).permute(0, 3, 1, 2), size=(9, 13),
        mode="bilinear", align_corners=True)
    ref = F.cross_entropy(up, torch.tensor(np.asarray(labels)).long(),
                          ignore_index=250)
    np.testing.assert_allclose(ours, float(ref), rtol=1e-5)
    weights = uniform(2, (2, 9, 13))
    ours_w = segmentation.cross_entropy(logits, labels,
                                        pixel_weights=weights)
    ref_w = (F.cross_entropy(up, torch.tensor(np.asarray(labels)).long(),
                             ignore_index=250, reduction="none")
             * torch.tensor(np.asarray(weights))).mean()
    np.testing.assert_allclose(ours_w, float(ref_w), rtol=1e-5)

  def test_one_size_differing_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "only one spatial size"):
      segmentation.cross_entropy(jnp.zeros((1, 4, 6, 3)),
                                 jnp.zeros((1, 4, 8), jnp.int32))

  def test_out_of_range_label_is_an_error(self):
    logits, _ = _three_pixels()
    with self.assertRaisesRegex(ValueError, r"\[0, 2\) or 250.*\[7\]"):
      segmentation.cross_entropy(logits, jnp.array([[[0, 7, 250]]]))

  def test_jits(self):
    logits, labels = _three_pixels()
    np.testing.assert_allclose(
        jax.jit(segmentation.cross_entropy)(logits, labels),
        (_LN2 + _LN43) / 2, rtol=1e-6)


class EntropyTest(absltest.TestCase):

  def test_uniform_is_one_and_peaked_is_zero(self):
    logits = jnp.stack([jnp.zeros((1, 2, 5)),
                        jnp.array([[[100.0, 0, 0, 0, 0]] * 2])], axis=1)
    ent = segmentation.pixel_wise_entropy(logits)
    self.assertEqual(ent.shape, (1, 2, 2))
    np.testing.assert_allclose(ent[0, 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(ent[0, 1], 0.0, atol=1e-6)

  def test_matches_formula_and_normalize(self):
    logits = normal(3, (2, 3, 4, 19))
    p = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    expected = -np.sum(p * np.log2(p + 1e-30), axis=-1) / np.log2(19)
    ent = segmentation.pixel_wise_entropy(logits)
    np.testing.assert_allclose(ent, expected, rtol=1e-5)
    norm = segmentation.pixel_wise_entropy(logits, normalize=True)
    self.assertAlmostEqual(float(norm.min()), 0.0, places=6)
    self.assertAlmostEqual(float(norm.max()), 1.0, places=6)


if __name__ == "__main__":
  absltest.main()
