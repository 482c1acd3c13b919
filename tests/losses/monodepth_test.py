"""monodepth_loss against a torch re-implementation of monodepth2.

The torch side follows monodepth2 in NCHW (BackprojectDepth,
Project3D, grid_sample, SSIM, get_smooth_loss, compute_losses) with the
identity tie-breaking noise set to zero; the noise itself is tested through
the forms that take it (``min_reprojection``, ``monodepth_loss_with_noise``).
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from sdeseg_jax.geometry import camera
from sdeseg_jax.geometry import transforms
from sdeseg_jax.losses import monodepth
from tests.losses._reference import to_nchw, torch, torch_edge_smoothness
from tests.losses._reference import torch_ssim, uniform

if torch is not None:
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top


_B, _H, _W = 2, 16, 32
_SCALES = (0, 1, 2, 3)


_pose = jax.jit(transforms.transformation_from_parameters,
               static_argnames="invert")


def _inputs(seed=0):
  # numpy RNG: eager jax.random would compile one kernel per shape.
  rng = np.random.default_rng(seed)

  def uniform(shape, lo=0.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)

  disps = {s: uniform((_B, _H >> s, _W >> s, 1), 0.01, 0.3) for s in _SCALES}
  # Independent frames: per pixel, identity or reprojection may win.
  color = uniform((_B, 3, _H, _W, 3))
  pyramid = {s: uniform((_B, _H >> s, _W >> s, 3)) for s in (1, 2, 3)}
  K = camera.intrinsics_matrix(20.0, 18.0, 15.5, 7.0)
  K = np.broadcast_to(K, (_B, 4, 4)).copy()
  inv_K = camera.invert_intrinsics(K)
  cam_T_cam = {
      f: _pose(uniform((_B, 3), -0.03, 0.03), uniform((_B, 3), -0.3, 0.3),
               invert=f < 0)
      for f in (-1, 1)}
  return disps, color, pyramid, cam_T_cam, K, inv_K


@functools.lru_cache(maxsize=None)
def _jitted_loss(automask, avg_reprojection, identity_noise):
  cfg = common.sde_loss_config(
      automask=automask, avg_reprojection=avg_reprojection,
      identity_noise=identity_noise)
  return jax.jit(functools.partial(monodepth.monodepth_loss, cfg=cfg))


# ----------------------------- torch reference ------------------------------


def _torch_pe(pred, target):
  l1 = torch.abs(target - pred).mean(1, True)
  return 0.85 * torch_ssim(pred, target).mean(1, True) + 0.15 * l1


def _torch_monodepth(disps, color, pyramid, cam_T_cam, K, inv_K, automask,
                     avg_reprojection):
  """generate_images_pred + compute_losses of monodepth2, noise = 0.

  ``disps`` and ``cam_T_cam`` may hold torch tensors (NCHW / [B,4,4]) so the
  caller can differentiate; numpy/jax NHWC inputs are converted. Returns the
  total loss tensor and the per-scale floats.
  """
  disps = {s: d if isinstance(d, torch.Tensor) else to_nchw(d)
           for s, d in disps.items()}
  cam_T_cam = {f: m if isinstance(m, torch.Tensor)
               else torch.tensor(np.asarray(m)) for f, m in cam_T_cam.items()}
  colors = {f: to_nchw(color[:, i]) for i, f in enumerate((-1, 0, 1))}
  K_t, inv_K_t = torch.tensor(K), torch.tensor(inv_K)
  ys, xs = np.meshgrid(np.arange(_H), np.arange(_W), indexing="ij")
  pix = torch.tensor(np.stack([xs.ravel(), ys.ravel(), np.ones(_H * _W)])
                     .astype(np.float32))
  target = colors[0]
  total = 0
  per_scale = []
  for s in _SCALES:
    disp = disps[s]
    disp_up = F.interpolate(disp, [_H, _W], mode="bilinear",
                            align_corners=False)
    depth = 1 / (0.01 + (10 - 0.01) * disp_up)
    reproj, ident = [], []
    for f in (-1, 1):
      cam = torch.matmul(inv_K_t[:, :3, :3], pix) * depth.view(_B, 1, -1)
      cam = torch.cat([cam, torch.ones(_B, 1, _H * _W)], 1)
      proj = torch.matmul(K_t, cam_T_cam[f])[:, :3]
      p = torch.matmul(proj, cam)
      uv = p[:, :2] / (p[:, 2:3] + 1e-7)
      uv = uv.view(_B, 2, _H, _W).permute(0, 2, 3, 1).clone()
      uv[..., 0] /= _W - 1
      uv[..., 1] /= _H - 1
      uv = (uv - 0.5) * 2
      pred = F.grid_sample(colors[f], uv, padding_mode="border",
                           align_corners=True)
      reproj.append(_torch_pe(pred, target))
      ident.append(_torch_pe(colors[f], target))
    reproj = torch.cat(reproj, 1)
    ident = torch.cat(ident, 1)
    if avg_reprojection:
      reproj = reproj.mean(1, keepdim=True)
      ident = ident.mean(1, keepdim=True)
    combined = torch.cat([ident, reproj], 1) if automask else reproj
    to_opt = combined if combined.shape[1] == 1 else combined.min(1)[0]
    loss = to_opt.mean()
    norm = disp / (disp.mean(2, True).mean(3, True) + 1e-7)
    img = target if s == 0 else to_nchw(pyramid[s])
    loss = loss + 1e-3 * torch_edge_smoothness(norm, img) / (2 ** s)
    per_scale.append(loss.detach())
    total = total + loss
  return total / len(_SCALES), per_scale


@functools.lru_cache(maxsize=None)
def _gradients():
  """Gradients of the noise-free loss w.r.t. disparities and poses."""
  disps, color, pyramid, cam_T_cam, K, inv_K = _inputs(3)
  cfg = common.sde_loss_config(identity_noise=0.0)

  def loss_fn(d, t):
    return monodepth.monodepth_loss(
        d, color, pyramid, t, K, inv_K, None, cfg)[0]

  return jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(disps, cam_T_cam)


def _static_scene():
  """Every frame equals the centre frame, identity camera motion."""
  frame = np.random.default_rng(3).uniform(size=(_B, 1, _H, _W, 3))
  frame = frame.astype(np.float32)
  color = np.tile(frame, (1, 3, 1, 1, 1))
  disps = {s: np.full((_B, _H >> s, _W >> s, 1), 0.2, np.float32)
           for s in _SCALES}
  # Batch-dict style keys ("s1".."s3") are accepted too.
  pyramid = {f"s{s}": np.zeros((_B, _H >> s, _W >> s, 3), np.float32)
             for s in (1, 2, 3)}
  eye = np.broadcast_to(np.eye(4, dtype=np.float32), (_B, 4, 4))
  K = camera.intrinsics_matrix(16.0, 16.0, 8.0, 4.0)
  return (frame, disps, color, pyramid, {-1: eye, 1: eye}, K,
          camera.invert_intrinsics(K))


class MinReprojectionTest(absltest.TestCase):

  def test_by_hand(self):
    # Four pixels, one identity and one reprojection channel.
    ident = jnp.array([0.5, 0.2, 0.3, 0.1]).reshape(1, 1, 4, 1)
    reproj = jnp.array([0.3, 0.3, 0.3, 0.4]).reshape(1, 1, 4, 1)
    noise = jnp.array([0.0, 0.2, 0.0, -0.05]).reshape(1, 1, 4, 1)
    m, sel = monodepth.min_reprojection(ident, reproj, noise)
    # 0.5 vs 0.3; 0.2+0.2 vs 0.3; exact tie -> identity; 0.1-0.05 vs 0.4.
    np.testing.assert_allclose(m[0, 0], [0.3, 0.3, 0.3, 0.05], rtol=1e-6)
    np.testing.assert_array_equal(sel[0, 0], [1.0, 1.0, 0.0, 0.0])
    m, sel = monodepth.min_reprojection(ident, reproj)
    np.testing.assert_allclose(m[0, 0], [0.3, 0.2, 0.3, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(sel[0, 0], [1.0, 0.0, 0.0, 0.0])
    m, sel = monodepth.min_reprojection(None, reproj)
    np.testing.assert_allclose(m[0, 0], [0.3, 0.3, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(sel, 1.0)

  def test_given_noise_decides_the_static_scene(self):
    # Static scene: identity errors are 0, warped errors ~0. Noise +1 on the
    # identity errors makes every warped source win; -1 makes every identity
    # error win, and the photometric term is then exactly 0 - 1.
    _, disps, color, pyramid, cam_T_cam, K, inv_K = _static_scene()
    cfg = common.sde_loss_config(scales=(0,))
    n = monodepth.num_identity_channels(cfg)
    self.assertEqual(n, 2)
    fn = jax.jit(functools.partial(monodepth.monodepth_loss_with_noise,
                                   cfg=cfg))
    for sign, fraction, photo in ((1.0, 0.0, None), (-1.0, 1.0, -1.0)):
      noise = {0: np.full((_B, _H, _W, n), sign, np.float32)}
      _, aux = fn({0: disps[0]}, color, pyramid, cam_T_cam, K, inv_K, noise)
      self.assertEqual(float(aux["automask_fraction/s0"]), fraction)
      if photo is not None:
        np.testing.assert_allclose(aux["photometric/s0"], photo, atol=1e-6)
    with self.assertRaisesRegex(ValueError, r"noise\[0\] must be"):
      fn({0: disps[0]}, color, pyramid, cam_T_cam, K, inv_K,
         {0: np.zeros((_B, _H, _W, 1), np.float32)})

  def test_keyed_form_adds_its_drawn_noise(self):
    disps, color, pyramid, cam_T_cam, K, inv_K = _inputs(2)
    cfg = common.sde_loss_config(identity_noise=1e-5)
    key = jax.random.key(4)
    noise = monodepth.identity_noise(key, (_B, _H, _W, 2), cfg)
    self.assertEqual(sorted(noise), list(_SCALES))
    # Redrawn per scale, of the configured size.
    self.assertFalse(np.array_equal(noise[0], noise[1]))
    self.assertAlmostEqual(float(np.std(noise[0])), 1e-5, delta=2e-6)
    keyed, _ = _jitted_loss(True, False, 1e-5)(
        disps, color, pyramid, cam_T_cam, K, inv_K, key)
    given, _ = jax.jit(functools.partial(
        monodepth.monodepth_loss_with_noise, cfg=cfg))(
            disps, color, pyramid, cam_T_cam, K, inv_K, noise)
    np.testing.assert_allclose(keyed, given, rtol=1e-6)


class MonodepthLossTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("automask", True, False), ("no_automask", False, False),
      ("automask_avg", True, True))
  @absltest.skipIf(torch is None, "torch not installed")
  def test_matches_torch_reference(self, automask, avg_reprojection):
    disps, color, pyramid, cam_T_cam, K, inv_K = _inputs()
    fn = _jitted_loss(automask, avg_reprojection, 0.0)
    loss, aux = fn(disps, color, pyramid, cam_T_cam, K, inv_K, None)
    ref, ref_scales = _torch_monodepth(
        disps, color, pyramid, cam_T_cam, K, inv_K, automask,
        avg_reprojection)
    np.testing.assert_allclose(loss, float(ref), rtol=1e-5, atol=1e-6)
    for s, r in zip(_SCALES, ref_scales):
      np.testing.assert_allclose(aux[f"loss/s{s}"], float(r), rtol=1e-5,
                                 atol=1e-6)
    frac = float(aux["automask_fraction/s0"])
    if automask:
      # Random frames: identity wins at some pixels, reprojection at others.
      self.assertGreater(frac, 0.0)
      self.assertLess(frac, 1.0)
    else:
      self.assertEqual(frac, 0.0)

  def test_gradients_finite(self):
    g_disps, g_pose = _gradients()
    for leaf in jax.tree.leaves((g_disps, g_pose)):
      self.assertTrue(np.all(np.isfinite(leaf)))
      self.assertGreater(float(jnp.abs(leaf).sum()), 0.0)

  @absltest.skipIf(torch is None, "torch not installed")
  def test_gradients_match_torch_reference(self):
    disps, color, pyramid, cam_T_cam, K, inv_K = _inputs(3)
    g_disps, g_pose = _gradients()
    d_t = {s: to_nchw(d).requires_grad_(True) for s, d in disps.items()}
    t_t = {f: torch.tensor(np.asarray(m)).requires_grad_(True)
           for f, m in cam_T_cam.items()}
    ref, _ = _torch_monodepth(d_t, color, pyramid, t_t, K, inv_K, True,
                              False)
    ref.backward()
    for s in _SCALES:
      ref_g = d_t[s].grad.permute(0, 2, 3, 1).numpy()
      np.testing.assert_allclose(g_disps[s], ref_g,
                                 atol=1e-4 * np.abs(ref_g).max())
    for f in (-1, 1):
      ref_g = t_t[f].grad.numpy()
      np.testing.assert_allclose(g_pose[f], ref_g,
                                 atol=1e-4 * np.abs(ref_g).max())

  def test_identity_noise_only_breaks_ties(self):
    disps, color, pyramid, cam_T_cam, K, inv_K = _inputs(2)
    args = (disps, color, pyramid, cam_T_cam, K, inv_K)
    base, _ = _jitted_loss(True, False, 0.0)(*args, None)
    noisy1, _ = _jitted_loss(True, False, 1e-5)(*args, jax.random.key(1))
    noisy2, _ = _jitted_loss(True, False, 1e-5)(*args, jax.random.key(2))
    self.assertNotEqual(float(noisy1), float(noisy2))
    np.testing.assert_allclose(noisy1, base, atol=1e-5)

  def test_perfect_warp_gives_zero_photometric_loss(self):
    # Static camera and scene: every frame equals the centre frame, so the
    # min error is 0 and only smoothness of a constant disparity remains (0).
    frame, disps, color, pyramid, cam_T_cam, K, inv_K = _static_scene()
    loss, aux = _jitted_loss(False, False, 0.0)(
        disps, color, pyramid, cam_T_cam, K, inv_K, None)
    np.testing.assert_allclose(loss, 0.0, atol=1e-5)
    np.testing.assert_allclose(aux["warped"][1], frame[:, 0], atol=1e-5)

  def test_clear_errors(self):
    disps, color, pyramid, cam_T_cam, K, inv_K = _inputs()
    cfg = common.sde_loss_config()

    def call(*args):
      # Abstract evaluation: shape checks run, the loss is not computed.
      return jax.eval_shape(
          lambda *a: monodepth.monodepth_loss(*a, cfg=cfg), *args)

    key = jax.random.key(0)
    with self.assertRaisesRegex(ValueError, "needs an rng"):
      call(disps, color, pyramid, cam_T_cam, K, inv_K, None)
    with self.assertRaisesRegex(ValueError, "dtype uint8"):
      call(disps, (color * 255).astype(np.uint8), pyramid, cam_T_cam, K,
           inv_K, key)
    with self.assertRaisesRegex(KeyError, "frame offset 1"):
      call(disps, color, pyramid, {-1: cam_T_cam[-1]}, K, inv_K, key)
    with self.assertRaisesRegex(KeyError, "pyramid has no image for scale 2"):
      call(disps, color, {1: pyramid[1]}, cam_T_cam, K, inv_K, key)
    with self.assertRaisesRegex(ValueError, "T=3"):
      call(disps, color[:, :2], pyramid, cam_T_cam, K, inv_K, key)
    with self.assertRaisesRegex(KeyError, "no disparity for scale 3"):
      call({s: disps[s] for s in (0, 1, 2)}, color, pyramid, cam_T_cam, K,
           inv_K, key)

if __name__ == "__main__":
  absltest.main()
