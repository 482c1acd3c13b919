"""Tests of SSIM, the photometric error and edge-aware smoothness."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.losses import photometric
from sdeseg_jax.losses import smoothness
from tests.losses._reference import normal, to_nchw, torch
from tests.losses._reference import torch_edge_smoothness, torch_ssim, uniform


def _torch_smooth(disp, img):
  disp = disp / (disp.mean(2, True).mean(3, True) + 1e-7)
  return torch_edge_smoothness(disp, img)


class PhotometricTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.x = uniform(0, (2, 8, 12, 3))
    self.y = np.clip(self.x + 0.2 * normal(1, self.x.shape), 0, 1)

  def test_ssim_of_identical_images_is_zero(self):
    loss = photometric.ssim(self.x, self.x)
    self.assertEqual(loss.shape, self.x.shape)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)

  def test_ssim_of_different_images_is_positive(self):
    self.assertGreater(float(jnp.mean(photometric.ssim(self.x, self.y))),
                       0.05)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_ssim_matches_torch(self):
    ours = photometric.ssim(self.x, self.y)
    ref = torch_ssim(to_nchw(self.x), to_nchw(self.y))
    ref = ref.permute(0, 2, 3, 1).numpy()
    # sigma = pool(x^2) - mu^2 cancels; both sides round differently.
    np.testing.assert_allclose(ours, ref, atol=5e-6)

  def test_photometric_error_composition(self):
    err = photometric.photometric_error(self.y, self.x)
    self.assertEqual(err.shape, (2, 8, 12))
    ssim_map = jnp.mean(photometric.ssim(self.y, self.x), axis=-1)
    l1 = jnp.mean(jnp.abs(self.y - self.x), axis=-1)
    np.testing.assert_allclose(err, 0.85 * ssim_map + 0.15 * l1, atol=1e-6)
    np.testing.assert_allclose(
        photometric.photometric_error(self.y, self.x, ssim_weight=0.0), l1,
        atol=1e-7)
    np.testing.assert_allclose(
        photometric.photometric_error(self.x, self.x), 0.0, atol=1e-6)

  def test_ssim_shape_mismatch_is_clear(self):
    with self.assertRaisesRegex(ValueError, "equal shape"):
      photometric.ssim(self.x, self.x[:, :4])


class SmoothnessTest(absltest.TestCase):

  def test_constant_disparity_is_zero(self):
    img = uniform(2, (2, 6, 10, 3))
    disp = jnp.full((2, 6, 10, 1), 0.3)
    self.assertEqual(float(smoothness.smoothness(disp, img)), 0.0)

  def test_by_hand_on_a_step(self):
    # Two identical rows of disp [1, 2]: mean 1.5, normalised x-difference
    # 1/1.5, weighted by exp(-0.5) for the 0.5 image step in every channel;
    # the vertical differences are all 0.
    disp = jnp.array([[1.0, 2.0], [1.0, 2.0]]).reshape(1, 2, 2, 1)
    img = jnp.broadcast_to(
        jnp.array([[0.0, 0.5], [0.0, 0.5]]).reshape(1, 2, 2, 1), (1, 2, 2, 3))
    expected = (1 / 1.5) * np.exp(-0.5)
    np.testing.assert_allclose(smoothness.smoothness(disp, img), expected,
                               rtol=1e-6)

  def test_edges_reduce_the_penalty(self):
    disp = uniform(3, (1, 6, 8, 1))
    flat = jnp.zeros((1, 6, 8, 3))
    edgy = uniform(4, (1, 6, 8, 3))
    self.assertLess(float(smoothness.smoothness(disp, edgy)),
                    float(smoothness.smoothness(disp, flat)))

  @absltest.skipIf(torch is None, "torch not installed")
  def test_matches_torch(self):
    disp = uniform(5, (2, 6, 10, 1))
    img = uniform(6, (2, 6, 10, 3))
    ref = float(_torch_smooth(to_nchw(disp), to_nchw(img)))
    np.testing.assert_allclose(smoothness.smoothness(disp, img), ref,
                               rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
