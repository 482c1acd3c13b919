"""Tests of the intrinsics helpers on numpy and jax inputs."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.geometry import camera


class CameraTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.K = camera.intrinsics_matrix(100.0, 120.0, 30.0, 20.0)

  def test_intrinsics_matrix_layout_numpy(self):
    self.assertIsInstance(self.K, np.ndarray)
    self.assertEqual(self.K.dtype, np.float32)
    np.testing.assert_array_equal(
        self.K, [[100, 0, 30, 0], [0, 120, 20, 0], [0, 0, 1, 0],
                 [0, 0, 0, 1]])

  def test_intrinsics_matrix_batched(self):
    K = camera.intrinsics_matrix(np.array([1.0, 2.0]), 3.0, 4.0, 5.0)
    self.assertEqual(K.shape, (2, 4, 4))
    np.testing.assert_array_equal(K[:, 0, 0], [1, 2])
    np.testing.assert_array_equal(K[:, 1, 1], [3, 3])

  def test_scale_divides_rows_0_and_1(self):
    k2 = camera.scale_intrinsics(self.K, 2)
    self.assertIsInstance(k2, np.ndarray)
    np.testing.assert_allclose(k2[0], [25, 0, 7.5, 0])
    np.testing.assert_allclose(k2[1], [0, 30, 5, 0])
    np.testing.assert_array_equal(k2[2:], self.K[2:])

  def test_scale_on_jax_stays_jax(self):
    k1 = camera.scale_intrinsics(jnp.asarray(self.K)[None], 1)
    self.assertIsInstance(k1, jax.Array)
    np.testing.assert_allclose(k1[0, 0, 0], 50.0)
    jitted = jax.jit(lambda k: camera.scale_intrinsics(k, 3))
    np.testing.assert_allclose(jitted(jnp.asarray(self.K))[1, 2], 2.5)

  def test_crop_shifts_principal_point(self):
    kc = camera.crop_intrinsics(self.K, 10, 5)
    np.testing.assert_allclose(kc[0, 2], 20.0)
    np.testing.assert_allclose(kc[1, 2], 15.0)
    kc[0, 2] = self.K[0, 2]
    kc[1, 2] = self.K[1, 2]
    np.testing.assert_array_equal(kc, self.K)

  def test_crop_batched_offsets(self):
    K = np.stack([self.K, self.K])
    kc = camera.crop_intrinsics(K, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    np.testing.assert_allclose(kc[:, 0, 2], [29, 28])
    np.testing.assert_allclose(kc[:, 1, 2], [17, 16])

  def test_flip(self):
    kf = camera.flip_intrinsics(self.K, 64)
    np.testing.assert_allclose(kf[0, 2], 34.0)
    np.testing.assert_allclose(kf[1, 2], 20.0)
    np.testing.assert_allclose(kf[0, 0], 100.0)
    # Master-branch bug: also flip cy.
    kb = camera.flip_intrinsics(self.K, 64, height=32)
    np.testing.assert_allclose(kb[1, 2], 12.0)
    # Flipping twice is the identity.
    np.testing.assert_allclose(
        camera.flip_intrinsics(kf, 64), self.K)

  def test_invert(self):
    inv = camera.invert_intrinsics(self.K)
    np.testing.assert_allclose(inv @ self.K, np.eye(4), atol=1e-6)
    inv_j = camera.invert_intrinsics(jnp.asarray(self.K))
    np.testing.assert_allclose(inv_j, inv, rtol=1e-5, atol=1e-7)

  def test_bad_shape_is_clear(self):
    with self.assertRaisesRegex(ValueError, r"\[\.\.\., 4, 4\]"):
      camera.scale_intrinsics(np.eye(3), 1)


if __name__ == "__main__":
  absltest.main()
