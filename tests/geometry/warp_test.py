"""Tests of back-projection, projection, bilinear sampling and warping.

Analytic checks plus parity with torch ``grid_sample``/``interpolate`` (CPU
torch; skipped when it is not installed).
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.geometry import camera
from sdeseg_jax.geometry import transforms
from sdeseg_jax.geometry import warp

try:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

_H, _W = 12, 20


def _uniform(seed, shape, lo=0.0, hi=1.0):
  # numpy RNG: eager jax.random compiles a kernel per shape (slow on CPU CI).
  return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _K(batch=2):
  k = camera.intrinsics_matrix(18.0, 16.0, 9.5, 6.0)
  return np.broadcast_to(k, (batch, 4, 4)).copy()


def _torch_grid_sample(img, pix):
  """Reference: pixel coords -> [-1, 1] grid -> grid_sample (monodepth2)."""
  h, w = img.shape[1:3]
  img_t = torch.tensor(np.asarray(img)).permute(0, 3, 1, 2)
  grid = torch.tensor(np.asarray(pix)).clone()
  grid[..., 0] = (grid[..., 0] / (w - 1) - 0.5) * 2
  grid[..., 1] = (grid[..., 1] / (h - 1) - 0.5) * 2
  return img_t, grid


class WarpTest(parameterized.TestCase):

  def test_backproject_project_identity_grid(self):
    depth = _uniform(0, (2, _H, _W, 1), 0.5, 50.0)
    K = _K()
    inv_K = camera.invert_intrinsics(K)
    points = warp.backproject(depth, inv_K)
    self.assertEqual(points.shape, (2, _H, _W, 4))
    np.testing.assert_array_equal(points[..., 3], 1.0)
    np.testing.assert_allclose(points[..., 2], depth[..., 0], rtol=1e-6)
    pix = warp.project(points, K, np.eye(4, dtype=np.float32))
    grid = warp.pixel_grid(_H, _W)[..., :2]
    np.testing.assert_allclose(pix, np.broadcast_to(grid, pix.shape),
                               atol=1e-4)

  def test_identity_pose_warps_onto_itself_exactly(self):
    src = _uniform(1, (2, _H, _W, 3))
    depth = jnp.full((2, _H, _W, 1), 7.0)
    # Integer focal lengths/centre keep every projected coordinate exact.
    K = camera.intrinsics_matrix(16.0, 16.0, 8.0, 4.0)
    inv_K = camera.invert_intrinsics(K)
    warped = warp.inverse_warp(src, depth, np.eye(4, dtype=np.float32),
                               K, inv_K)
    np.testing.assert_allclose(warped, src, atol=1e-5)

  @parameterized.parameters((0.25, 2.0, 2), (-0.125, 1.0, -2), (0.75, 4.0, 3))
  def test_fronto_parallel_plane_shifts_by_f_tx_over_z(self, tx, z, shift):
    f = 16.0
    self.assertEqual(f * tx / z, shift)
    src = _uniform(2, (1, _H, _W, 3))
    depth = jnp.full((1, _H, _W, 1), z)
    K = camera.intrinsics_matrix(f, f, 8.0, 5.0)
    T = transforms.transformation_from_parameters(
        jnp.zeros((1, 3)), jnp.array([[tx, 0.0, 0.0]]), invert=False)
    warped = warp.inverse_warp(src, depth, T, K, camera.invert_intrinsics(K))
    cols = np.clip(np.arange(_W) + shift, 0, _W - 1)  # border padding
    np.testing.assert_allclose(warped, np.asarray(src)[:, :, cols], atol=1e-5)

  def test_bilinear_sample_by_hand(self):
    img = jnp.arange(6.0).reshape(1, 2, 3, 1)  # [[0,1,2],[3,4,5]]
    pix = jnp.array([[[[0.5, 0.5], [2.0, 1.0], [-4.0, 0.25], [9.0, 9.0]]]])
    out = warp.bilinear_sample(img, pix)[0, 0, :, 0]
    np.testing.assert_allclose(out, [2.0, 5.0, 0.75, 5.0], atol=1e-6)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_bilinear_sample_matches_grid_sample_values_and_grads(self):
    img = _normal(3, (2, 7, 9, 3))
    # Out-of-range on purpose: x in [-3, W+2], y in [-3, H+2].
    pix = np.stack([_uniform(4, (2, 5, 6), -3.0, 11.0),
                    _uniform(5, (2, 5, 6), -3.0, 9.0)], axis=-1)
    cot = _normal(6, (2, 5, 6, 3))

    def fn(im, p):
      return jnp.sum(warp.bilinear_sample(im, p) * cot)

    out = warp.bilinear_sample(img, pix)
    g_img, g_pix = jax.grad(fn, argnums=(0, 1))(img, pix)

    img_t, grid = _torch_grid_sample(img, pix)
    img_t.requires_grad_(True)
    grid.requires_grad_(True)
    out_t = F.grid_sample(img_t, grid, mode="bilinear",
                          padding_mode="border", align_corners=True)
    (out_t * torch.tensor(np.asarray(cot)).permute(0, 3, 1, 2)).sum().backward()
    np.testing.assert_allclose(
        out, out_t.detach().permute(0, 2, 3, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(
        g_img, img_t.grad.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    # Chain rule of the pixel -> [-1, 1] normalisation.
    scale = np.array([2.0 / (9 - 1), 2.0 / (7 - 1)], np.float32)
    np.testing.assert_allclose(g_pix, grid.grad.numpy() * scale, atol=1e-4)
    # Outside the image the coordinate gradient is zero (border clamp).
    outside = (pix[..., 0] < 0) | (pix[..., 0] > 8)
    self.assertTrue(np.any(outside))
    np.testing.assert_array_equal(np.asarray(g_pix[..., 0])[outside], 0.0)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_inverse_warp_matches_torch_pipeline(self):
    b = 2
    src = _uniform(7, (b, _H, _W, 3))
    depth = _uniform(8, (b, _H, _W, 1), 1.0, 20.0)
    T = transforms.transformation_from_parameters(
        _normal(9, (b, 3)) * 0.05, _normal(10, (b, 3)) * 0.3, invert=True)
    K = _K(b)
    inv_K = camera.invert_intrinsics(K)
    ours = warp.inverse_warp(src, depth, T, K, inv_K)

    # monodepth2 BackprojectDepth + Project3D + grid_sample, in torch.
    d = torch.tensor(np.asarray(depth)).permute(0, 3, 1, 2).reshape(b, 1, -1)
    ys, xs = np.meshgrid(np.arange(_H), np.arange(_W), indexing="ij")
    pix = torch.tensor(np.stack([xs.ravel(), ys.ravel(),
                                 np.ones(_H * _W)]).astype(np.float32))
    cam = torch.matmul(torch.tensor(inv_K)[:, :3, :3], pix) * d
    cam = torch.cat([cam, torch.ones(b, 1, _H * _W)], 1)
    proj = torch.matmul(torch.tensor(K), torch.tensor(np.asarray(T)))[:, :3]
    p = torch.matmul(proj, cam)
    uv = p[:, :2] / (p[:, 2:3] + 1e-7)
    uv = uv.view(b, 2, _H, _W).permute(0, 2, 3, 1)
    img_t, grid = _torch_grid_sample(src, uv.numpy())
    ref = F.grid_sample(img_t, grid, padding_mode="border",
                        align_corners=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)

  def test_inverse_warp_jits_with_unbatched_K(self):
    K = camera.intrinsics_matrix(18.0, 16.0, 9.5, 6.0)
    inv_K = camera.invert_intrinsics(K)
    fn = jax.jit(warp.inverse_warp)
    src = jnp.ones((2, _H, _W, 3))
    out = fn(src, jnp.full((2, _H, _W, 1), 3.0), jnp.eye(4), K, inv_K)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)

  def test_bad_shapes_are_clear(self):
    with self.assertRaisesRegex(ValueError, r"depth must be \[B, H, W, 1\]"):
      warp.backproject(jnp.ones((2, 4, 4)), np.eye(4))
    with self.assertRaisesRegex(ValueError, r"pix must be"):
      warp.bilinear_sample(jnp.ones((2, 4, 4, 3)), jnp.ones((2, 4, 4, 3)))

  @parameterized.parameters(((5, 7), (9, 13)), ((8, 6), (3, 4)),
                            ((4, 4), (4, 9)), ((6, 5), (1, 1)))
  @absltest.skipIf(torch is None, "torch not installed")
  def test_resize_align_corners_matches_torch(self, in_hw, out_hw):
    x = _normal(11, (2, *in_hw, 3))
    ours = warp.resize_bilinear_align_corners(x, out_hw)
    ref = F.interpolate(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2),
                        size=out_hw, mode="bilinear", align_corners=True)
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(),
                               atol=1e-5)

  @parameterized.parameters(((4, 6), (8, 12)), ((2, 3), (16, 24)),
                            ((5, 7), (12, 15)), ((3, 3), (3, 8)))
  @absltest.skipIf(torch is None, "torch not installed")
  def test_resize_half_pixel_upsampling_matches_torch(self, in_hw, out_hw):
    x = _normal(12, (2, *in_hw, 1))
    ours = warp.resize_bilinear_half_pixel(x, out_hw)
    ref = F.interpolate(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2),
                        size=out_hw, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(),
                               atol=1e-5)

  def test_resize_half_pixel_refuses_downsampling(self):
    with self.assertRaisesRegex(ValueError, "h <= 2"):
      warp.resize_bilinear_half_pixel(jnp.ones((1, 4, 4, 1)), (2, 2))


if __name__ == "__main__":
  absltest.main()
