"""Tests of the strong augmentation (kornia04 / standard jitter, blur)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.mixing import augment


def _params(b=1.0, c=1.0, s=1.0, h=0.0, order=(0, 1, 2, 3)):
  f = lambda v: jnp.array([v], jnp.float32)
  return {"brightness": f(b), "contrast": f(c), "saturation": f(s),
          "hue": f(h), "order": jnp.array(order, jnp.int32)}


def _pixel(rgb):
  return jnp.array(rgb, jnp.float32).reshape(1, 1, 1, 3)


def _np_kornia_rgb_to_hsv(rgb):
  """float32 numpy transcription of kornia 0.4.0 rgb_to_hsv (IEEE per op)."""
  f32 = np.float32
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc, minc = rgb.max(-1), rgb.min(-1)
  delta = maxc - minc
  with np.errstate(invalid="ignore", divide="ignore"):
    s = np.nan_to_num(delta / maxc, nan=0.0).astype(f32)
  deltac = np.where(delta == 0, f32(1), delta)
  rc, gc, bc = (maxc - r) / deltac, (maxc - g) / deltac, (maxc - b) / deltac
  h = f32(4) + gc - rc
  h = np.where(g == maxc, f32(2) + rc - bc, h)
  h = np.where(r == maxc, bc - gc, h)
  h = np.where(minc == maxc, f32(0), h)
  h = (h / f32(6)) % f32(1)
  return np.stack([f32(2 * np.pi) * h, s, maxc], -1).astype(f32)


def _np_kornia_hsv_to_rgb(hsv):
  f32 = np.float32
  h = hsv[..., 0] / f32(2 * np.pi)
  s, v = hsv[..., 1], hsv[..., 2]
  hi = np.floor(h * f32(6)) % f32(6)
  f = (h * f32(6)) % f32(6) - hi
  p = v * (f32(1) - s)
  q = v * (f32(1) - f * s)
  t = v * (f32(1) - (f32(1) - f) * s)
  out = np.stack([hi, hi, hi], -1)
  for k, chans in enumerate(((v, t, p), (q, v, p), (p, v, t), (p, q, v),
                             (t, p, v), (v, p, q))):
    stack = np.stack(chans, -1)
    out = np.where(out == k, stack, out)
  return out.astype(f32)


class KorniaHsvTest(absltest.TestCase):

  def test_matches_ieee_float32_transcription_under_jit(self):
    # Clamped values (exact 0 and 1) and hues on sector boundaries, e.g.
    # R = G = 1 (60 degrees), are where the sequential-mask quirk makes the
    # result depend on the last bit of h; XLA must not reassociate there.
    rng = np.random.default_rng(0)
    x = np.clip(rng.uniform(-0.3, 1.3, (4000, 3)), 0, 1).astype(np.float32)
    x[:50, :2] = 1.0
    x[50:100, 1:] = 1.0
    sat = rng.uniform(0.75, 1.25, (4000,)).astype(np.float32)

    def jax_fn(x, sat):
      hsv = augment.kornia_rgb_to_hsv(x)
      hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * sat, 0, 1))
      return augment.kornia_hsv_to_rgb(hsv)

    hsv = _np_kornia_rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
    want = _np_kornia_hsv_to_rgb(hsv)
    for fn in (jax_fn, jax.jit(jax_fn)):
      np.testing.assert_allclose(fn(jnp.asarray(x), jnp.asarray(sat)), want,
                                 atol=2e-6)

  def test_rgb_to_hsv_by_hand(self):
    hsv = augment.kornia_rgb_to_hsv(jnp.array([[1.0, 0.5, 0.2],
                                               [0.0, 0.0, 0.0],
                                               [0.3, 0.3, 0.3]]))
    # r max: h = (bc - gc)/6 = (1 - 0.625)/6 turns; s = 0.8; v = 1.
    np.testing.assert_allclose(hsv[0], [2 * np.pi * 0.0625, 0.8, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose(hsv[1], [0, 0, 0])     # kornia NaN s -> 0
    np.testing.assert_allclose(hsv[2], [0, 0, 0.3])

  def test_round_trip_exact_below_one(self):
    rgb = jnp.array([[0.8, 0.4, 0.16], [0.5, 1.0, 0.2], [0.1, 0.3, 0.9],
                     [0.6, 0.2, 0.7], [0.25, 0.25, 0.25]])
    back = augment.kornia_hsv_to_rgb(augment.kornia_rgb_to_hsv(rgb))
    np.testing.assert_allclose(back, rgb, atol=1e-6)
    back = augment.hsv_to_rgb(augment.rgb_to_hsv(rgb))
    np.testing.assert_allclose(back, rgb, atol=1e-6)

  def test_sequential_mask_quirk_v1_sector0(self):
    rgb = jnp.array([[1.0, 0.5, 0.2]])
    back = augment.kornia_hsv_to_rgb(augment.kornia_rgb_to_hsv(rgb))
    # Sector 0 writes (v, t, p) = (1, 0.5, 0.2); R == 1.0 is matched again by
    # the k = 1 mask and replaced by q = 1 - f*s = 1 - 0.375*0.8 = 0.7.
    np.testing.assert_allclose(back, [[0.7, 0.5, 0.2]], atol=1e-6)
    # The clean conversion keeps the pixel.
    np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(rgb)),
                               rgb, atol=1e-6)

  def test_negative_hue_from_fmod(self):
    hsv = jnp.array([[2 * np.pi * 0.3, 0.5, 0.8]])
    neg = hsv.at[0, 0].add(-2 * np.pi)
    np.testing.assert_allclose(augment.kornia_hsv_to_rgb(neg),
                               augment.kornia_hsv_to_rgb(hsv), atol=1e-5)


class JitterTest(parameterized.TestCase):

  def test_kornia04_brightness_additive_contrast_not_centred(self):
    out = augment.apply_color_jitter(_pixel([0.5, 0.5, 0.5]), _params(b=1.1))
    np.testing.assert_allclose(out, 0.6, atol=1e-6)
    out = augment.apply_color_jitter(_pixel([0.2, 0.4, 0.6]), _params(c=1.2))
    np.testing.assert_allclose(out.ravel(), [0.24, 0.48, 0.72], atol=1e-6)

  def test_standard_brightness_multiplicative_contrast_centred(self):
    out = augment.apply_color_jitter(_pixel([0.5, 0.5, 0.5]), _params(b=1.1),
                                     "standard")
    np.testing.assert_allclose(out, 0.55, atol=1e-6)
    x = np.array([0.2, 0.4, 0.6])
    grey = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    out = augment.apply_color_jitter(_pixel(x), _params(c=1.2), "standard")
    np.testing.assert_allclose(out.ravel(), 1.2 * x - 0.2 * grey, atol=1e-6)

  def test_kornia04_neutral_factors_still_hit_quirk(self):
    out = augment.apply_color_jitter(_pixel([1.0, 0.5, 0.2]), _params())
    np.testing.assert_allclose(out.ravel(), [0.7, 0.5, 0.2], atol=1e-6)
    out = augment.apply_color_jitter(_pixel([1.0, 0.5, 0.2]), _params(),
                                     "standard")
    np.testing.assert_allclose(out.ravel(), [1.0, 0.5, 0.2], atol=1e-6)

  def test_hue_quarter_turn(self):
    # Pure red shifted by +1/4 turn is (0.5, 1, 0) in both modes.
    for mode in augment.MODES:
      out = augment.apply_color_jitter(_pixel([1.0, 0.0, 0.0]),
                                       _params(h=0.25), mode)
      np.testing.assert_allclose(out.ravel(), [0.5, 1.0, 0.0], atol=1e-5)

  def test_order_matters(self):
    x = _pixel([0.5, 0.5, 0.5])
    bc = augment.apply_color_jitter(x, _params(b=1.2, c=0.5, order=(0, 1, 2,
                                                                     3)))
    cb = augment.apply_color_jitter(x, _params(b=1.2, c=0.5, order=(1, 0, 2,
                                                                     3)))
    np.testing.assert_allclose(bc, 0.35, atol=1e-6)
    np.testing.assert_allclose(cb, 0.45, atol=1e-6)

  def test_params_ranges_and_per_image(self):
    p = augment.jitter_params(jax.random.key(0), 256)
    for k in ("brightness", "contrast", "saturation"):
      self.assertGreaterEqual(float(p[k].min()), 0.75)
      self.assertLessEqual(float(p[k].max()), 1.25)
    self.assertLess(float(p["hue"].min()), -0.2)
    self.assertGreater(float(p["hue"].max()), 0.2)
    np.testing.assert_array_equal(np.sort(p["order"]), [0, 1, 2, 3])
    x = jnp.full((2, 4, 4, 3), 0.4)
    out = augment.color_jitter(jax.random.key(1), x)
    self.assertGreater(float(jnp.abs(out[0] - out[1]).max()), 1e-3)

  def test_bad_mode(self):
    with self.assertRaisesRegex(ValueError, "kornia04"):
      augment.apply_color_jitter(_pixel([0, 0, 0]), _params(), "pil")


class BlurTest(absltest.TestCase):

  def test_kernel_size_and_sum(self):
    self.assertEqual(augment.blur_kernel_size(512), 51)
    self.assertEqual(augment.blur_kernel_size(1024), 103)
    self.assertEqual(augment.blur_kernel_size(32), 3)
    self.assertEqual(augment.blur_kernel_size(64), 7)
    self.assertEqual(augment.blur_kernel_size(8), 1)
    k = augment.gaussian_kernel1d(51, jnp.array([0.15, 1.15]))
    np.testing.assert_allclose(jnp.sum(k, -1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, k[:, ::-1])
    self.assertEqual(int(jnp.argmax(k[1])), 25)

  def test_matches_2d_reflect_convolution(self):
    import torch  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 32, 64, 3)).astype(np.float32)
    sigma = np.array([0.4, 1.1], np.float32)
    got = augment.gaussian_blur_with_sigma(jnp.asarray(x), jnp.asarray(sigma))
    ky, kx = 3, 7
    for i in range(2):
      gy = np.exp(-(np.arange(ky) - ky // 2) ** 2 / (2 * sigma[i] ** 2))
      gx = np.exp(-(np.arange(kx) - kx // 2) ** 2 / (2 * sigma[i] ** 2))
      k2 = np.outer(gy / gy.sum(), gx / gx.sum()).astype(np.float32)
      t = torch.from_numpy(x[i].transpose(2, 0, 1))[:, None]     # [3,1,H,W]
      t = torch.nn.functional.pad(t, (kx // 2, kx // 2, ky // 2, ky // 2),
                                  mode="reflect")
      want = torch.nn.functional.conv2d(t, torch.from_numpy(k2)[None, None])
      np.testing.assert_allclose(got[i], want[:, 0].numpy().transpose(1, 2, 0),
                                 atol=1e-5)

  def test_sigma_per_image_or_per_batch(self):
    x = jnp.zeros((2, 32, 32, 3)).at[:, 16, 16].set(1.0)  # two impulses
    per_image = augment.gaussian_blur(jax.random.key(0), x)
    per_batch = augment.gaussian_blur(jax.random.key(0), x,
                                      per_image_sigma=False)
    self.assertGreater(float(jnp.abs(per_image[0] - per_image[1]).max()),
                       1e-4)
    np.testing.assert_allclose(per_batch[0], per_batch[1])

  def test_constant_image_unchanged(self):
    x = jnp.full((2, 16, 16, 3), 0.3)
    np.testing.assert_allclose(
        augment.gaussian_blur(jax.random.key(0), x), x, atol=1e-6)


class StrongAugmentTest(absltest.TestCase):

  def test_gate_frequencies(self):
    keys = jax.random.split(jax.random.key(2), 2000)
    (jit_on, blur_on), _ = jax.vmap(augment.augment_gates)(keys)
    self.assertAlmostEqual(float(jnp.mean(jit_on)), 0.8, delta=0.03)
    self.assertAlmostEqual(float(jnp.mean(blur_on)), 0.5, delta=0.035)
    (never, _), _ = jax.vmap(
        lambda k: augment.augment_gates(k, 0.0, 1.0))(keys)
    self.assertFalse(bool(jnp.any(never)))

  def test_with_hand_made_draws(self):
    # Gates, jitter factors and sigma given, checked against numpy: jitter
    # = brightness x1.25 only ("standard": the other ops are neutral), blur
    # = a 3-tap Gaussian of sigma 1 (kernel size 3 at 24 px), reflect pad.
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.8, (1, 24, 24, 3)).astype(np.float32)
    fn = jax.jit(chex.assert_max_traces(n=1)(
        lambda im, d: augment.strong_augment_with_draws(im, d, "standard")))
    g = np.exp(-np.arange(-1.0, 2.0) ** 2 / 2.0)
    g /= g.sum()

    def np_blur(im):
      p = np.pad(im, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
      v = sum(g[i] * p[:, i:i + 24] for i in range(3))
      return sum(g[i] * v[:, :, i:i + 24] for i in range(3))

    for do_j in (False, True):
      for do_b in (False, True):
        draws = {"do_jitter": jnp.asarray(do_j), "do_blur": jnp.asarray(do_b),
                 "jitter": _params(b=1.25), "sigma": jnp.ones((1,))}
        want = np.clip(x * 1.25, 0, 1) if do_j else x
        want = np_blur(want) if do_b else want
        np.testing.assert_allclose(fn(x, draws), want, atol=1e-5,
                                   err_msg=f"jitter={do_j}, blur={do_b}")

  def test_keyed_form_replays_its_draws(self):
    x = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3))
    seen = set()
    for seed in range(64):
      key = jax.random.key(seed)
      draws = augment.augment_draws(key, 2)
      gates = (bool(draws["do_jitter"]), bool(draws["do_blur"]))
      if gates in seen:
        continue
      seen.add(gates)
      np.testing.assert_allclose(
          augment.strong_augment(key, x),
          augment.strong_augment_with_draws(x, draws), atol=1e-6)
      if gates == (False, False):
        np.testing.assert_array_equal(augment.strong_augment(key, x), x)
    self.assertLen(seen, 4)     # every gate combination was exercised
    self.assertTrue(bool(jnp.all(
        (draws["sigma"] >= 0.15) & (draws["sigma"] <= 1.15))))
    x = x[:1]
    np.testing.assert_array_equal(
        augment.strong_augment(jax.random.key(1), x, jitter_prob=0.0,
                               blur_prob=0.0), x)

  def test_jit_compiles_once(self):
    fn = jax.jit(chex.assert_max_traces(n=1)(augment.strong_augment))
    x = jnp.full((2, 8, 8, 3), 0.5)
    for seed in range(3):
      out = fn(jax.random.key(seed), x)
      self.assertEqual(out.shape, x.shape)
      self.assertTrue(bool(jnp.all((out >= 0) & (out <= 1))))

  def test_bad_shape(self):
    with self.assertRaisesRegex(ValueError, r"\[B, H, W, 3\]"):
      augment.strong_augment(jax.random.key(0), jnp.zeros((2, 8, 8)))


if __name__ == "__main__":
  absltest.main()
