"""Tests of disparity scaling and axis-angle pose transforms."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.geometry import transforms


def _uniform(seed, shape, lo=0.0, hi=1.0):
  # numpy RNG: eager jax.random compiles a kernel per shape (slow on CPU CI).
  return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _skew(v):
  x, y, z = v
  return jnp.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


class TransformsTest(parameterized.TestCase):

  def test_disp_to_depth_endpoints(self):
    scaled, depth = transforms.disp_to_depth(
        jnp.array([0.0, 1.0, 0.5]), 0.1, 100.0)
    np.testing.assert_allclose(scaled, [0.01, 10.0, 5.005], rtol=1e-6)
    np.testing.assert_allclose(depth, [100.0, 0.1, 1 / 5.005], rtol=1e-6)

  def test_disp_to_depth_rejects_bad_range(self):
    with self.assertRaisesRegex(ValueError, "min_depth < max_depth"):
      transforms.disp_to_depth(jnp.zeros(2), 10.0, 1.0)

  def test_rotation_matches_matrix_exponential(self):
    vecs = _normal(0, (5, 3)) * 0.7
    rot = transforms.rot_from_axisangle(vecs)
    self.assertEqual(rot.shape, (5, 4, 4))
    for v, r in zip(vecs, rot):
      expected = jax.scipy.linalg.expm(_skew(v))
      # axis = v / (|v| + 1e-7) makes it very slightly non-exact.
      np.testing.assert_allclose(r[:3, :3], expected, atol=2e-6)
      np.testing.assert_array_equal(r[3], [0, 0, 0, 1])
      np.testing.assert_array_equal(r[:3, 3], [0, 0, 0])

  def test_zero_rotation_is_identity_with_finite_gradient(self):
    rot = transforms.rot_from_axisangle(jnp.zeros((1, 3)))
    np.testing.assert_allclose(rot[0], np.eye(4), atol=1e-7)
    grad = jax.grad(
        lambda v: jnp.sum(transforms.rot_from_axisangle(v) ** 2))(
            jnp.zeros((1, 3)))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_translation_matrix(self):
    t = jnp.array([[1.0, 2.0, 3.0]])
    m = transforms.translation_matrix(t)
    expected = np.eye(4)
    expected[:3, 3] = [1, 2, 3]
    np.testing.assert_array_equal(m[0], expected)

  def test_forward_is_translation_after_rotation(self):
    aa = jnp.array([[0.1, -0.2, 0.3]])
    t = jnp.array([[0.5, 0.1, -0.2]])
    m = transforms.transformation_from_parameters(aa, t, invert=False)
    rot = transforms.rot_from_axisangle(aa)
    np.testing.assert_allclose(m[0, :3, :3], rot[0, :3, :3], atol=1e-7)
    np.testing.assert_allclose(m[0, :3, 3], t[0], atol=1e-7)

  @parameterized.parameters(0, 1, 2)
  def test_invert_gives_matrix_inverse(self, seed):
    aa = _normal(seed, (3, 3)) * 0.3
    t = _normal(seed + 10, (3, 3))
    fwd = transforms.transformation_from_parameters(aa, t, invert=False)
    inv = transforms.transformation_from_parameters(aa, t, invert=True)
    np.testing.assert_allclose(
        jnp.matmul(inv, fwd, precision="highest"),
        np.broadcast_to(np.eye(4), (3, 4, 4)), atol=2e-6)
    np.testing.assert_allclose(inv, np.linalg.inv(np.asarray(fwd)),
                               atol=2e-6)


if __name__ == "__main__":
  absltest.main()
