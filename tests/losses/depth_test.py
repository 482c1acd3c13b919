"""Tests of the berHu pseudo-depth loss and the feature distance."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.losses import depth
from sdeseg_jax.losses import feature
from tests.losses._reference import normal, torch


_TARGET = jnp.array([0.1, 0.5, 1.0, 2.0]).reshape(1, 2, 2, 1)


class BerhuTest(absltest.TestCase):

  def test_by_hand(self):
    # a = [.1, .5, 1, 2], c = 0.4: linear, then (a^2 + .16) / .8.
    loss = depth.berhu(jnp.zeros_like(_TARGET), _TARGET, 1.0)
    np.testing.assert_allclose(loss, (0.1 + 0.5125 + 1.45 + 5.2) / 4,
                               rtol=1e-6)

  def test_mask_zeroes_pixels_but_keeps_denominator(self):
    mask = jnp.array([1.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
    # a = [.1, .5, 1, 0], c = 0.2.
    loss = depth.berhu(jnp.zeros_like(_TARGET), _TARGET, mask)
    np.testing.assert_allclose(loss, (0.1 + 0.725 + 2.6 + 0.0) / 4,
                               rtol=1e-6)

  def test_apply_log(self):
    pred = jnp.full_like(_TARGET, 0.3)
    a = np.abs(np.log1p(np.asarray(_TARGET)) - np.log1p(0.3)).ravel()
    c = 0.2 * a.max()
    expected = np.mean(np.where(a <= c, a, (a * a + c * c) / (2 * c)))
    np.testing.assert_allclose(
        depth.berhu(pred, _TARGET, 1.0, apply_log=True), expected,
        rtol=1e-5)

  def test_threshold_is_a_constant(self):
    grad = jax.grad(depth.berhu)(jnp.zeros_like(_TARGET), _TARGET, 1.0)
    # d/dp: linear part -1/N; quadratic part -(a / c)/N with c fixed at 0.4.
    np.testing.assert_allclose(
        grad.ravel(), [-0.25, -1.25 / 4, -2.5 / 4, -5.0 / 4], rtol=1e-6)

  def test_zero_error_has_finite_gradient(self):
    loss, grad = jax.value_and_grad(depth.berhu)(_TARGET, _TARGET, 1.0)
    self.assertEqual(float(loss), 0.0)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_shape_mismatch_is_clear(self):
    with self.assertRaisesRegex(ValueError, "same shape"):
      depth.berhu(_TARGET, _TARGET[:, :1], 1.0)


class FeatureDistanceTest(absltest.TestCase):

  def test_by_hand(self):
    a = jnp.array([3.0, 0.0]).reshape(1, 1, 1, 2)
    b = jnp.array([0.0, -4.0]).reshape(1, 1, 1, 2)
    self.assertAlmostEqual(float(feature.feature_distance(a, b)), 5.0,
                           places=6)

  def test_equal_features_have_zero_gradient(self):
    a = jnp.ones((2, 2, 2, 3))
    grad = jax.grad(feature.feature_distance)(a, a)
    np.testing.assert_array_equal(grad, 0.0)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_matches_torch_dist(self):
    a = normal(0, (2, 3, 4, 5))
    b = normal(1, (2, 3, 4, 5))
    ref = torch.dist(torch.tensor(np.asarray(a)), torch.tensor(np.asarray(b)),
                     p=2)
    np.testing.assert_allclose(feature.feature_distance(a, b), float(ref),
                               rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
