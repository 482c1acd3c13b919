"""Strong augmentation of mixed images: colour jitter and Gaussian blur.

Images are float [B, H, W, 3] RGB in [0, 1]. Gates are drawn once per batch
(jitter with probability 0.8, then blur with probability 0.5, as the
reference does); the jitter factors and the blur sigma are drawn per image.
Everything is driven by jax keys and is jit-compatible with fixed shapes.

Two colour-jitter modes:

* `"kornia04"` (default; what the paper's numbers used): the reference's
  kornia 0.4.0 `ColorJitter(0.25, 0.25, 0.25, 0.25)`, quirks included.
  Per image b, c, s ~ U(0.75, 1.25), h ~ U(-0.25, 0.25) (a turn); one random
  order of the four ops shared by the batch; brightness is *additive*
  clamp(x + b - 1), contrast is clamp(x * c) *without* mean-centring,
  saturation S <- clamp(S * s) and hue H <- fmod(H + 2*pi*h, 2*pi) (may be
  negative) in kornia's HSV (H in radians). kornia's `hsv_to_rgb` writes its
  output with sequential masks `out[out == k] = ...` for k = 0..5, so a
  channel set to exactly 1.0 by sector 0 is overwritten by the sector-1
  value (a V = 1 pixel in sector 0 gets R = q = 1 - f*s). Replicated.
* `"standard"`: a clean torchvision-like jitter with the same factor ranges:
  multiplicative brightness clamp(x * b), contrast blended with the mean
  grey level of the image, saturation blended with the per-pixel grey level
  (ITU-R 601 weights 0.299/0.587/0.114), hue shifted by h turns modulo 1 in
  a correct HSV round trip. The order of the four ops is shared by the batch
  (torchvision draws it per call, i.e. per image when used in a loader).

Gaussian blur (kornia `GaussianBlur2d`): sigma ~ U(0.15, 1.15) per image (the
reference draws one sigma per call, i.e. per batch in the SSL step and per
pair in the cross-domain step), kernel size per axis
floor(ceil(0.1 L) - 0.5 + ceil(0.1 L) mod 2) (51 for L = 512), normalised
1-D Gaussian on x = arange(k) - k//2, separable, reflect padding.

Every random function has a form that takes the draw: `apply_color_jitter`
(jitter factors and order), `gaussian_blur_with_sigma` (sigma) and
`strong_augment_with_draws` (gates, factors, sigma; drawn by
`augment_draws`). The keyed forms draw and call them.
"""

import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("kornia04", "standard")
_TWO_PI = jnp.float32(2.0 * np.pi)


# ----------------------------------------------------------------------------
# kornia 0.4.0 colour conversions (H in radians, [..., 3] channels last).
# ----------------------------------------------------------------------------


def _ieee_div(x: jax.Array, c: float) -> jax.Array:
  """x / c with a correctly rounded division, as torch computes it.

  XLA rewrites a division by a constant into a multiplication by its
  reciprocal and folds chains of constant products (e.g. (2*pi*h)/(2*pi)*6
  into h*5.99999952), which moves hues on a sector boundary of kornia's
  `hsv_to_rgb` to the other sector, where the sequential-mask quirk gives a
  very different colour. A divisor that the compiler cannot see as a
  constant keeps the two roundings of the reference.
  """
  den = jax.lax.optimization_barrier(jnp.full(x.shape, c, jnp.float32))
  return x / den


def kornia_rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """kornia 0.4.0 `rgb_to_hsv`, channels last.

  Args:
    rgb: float [..., 3] in [0, 1].

  Returns:
    float32 [..., 3] (h in [0, 2*pi), s, v); h = 0 where max == min and
    s = 0 where v = 0 (kornia's NaN).
  """
  rgb = rgb.astype(jnp.float32)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  maxc = jnp.max(rgb, axis=-1)
  minc = jnp.min(rgb, axis=-1)
  v = maxc
  delta = maxc - minc
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  deltac = jnp.where(delta == 0, 1.0, delta)
  rc = (maxc - r) / deltac
  gc = (maxc - g) / deltac
  bc = (maxc - b) / deltac
  h = 4.0 + gc - rc
  h = jnp.where(g == maxc, 2.0 + rc - bc, h)
  h = jnp.where(r == maxc, bc - gc, h)  # red has priority over green
  h = jnp.where(minc == maxc, 0.0, h)
  h = jnp.mod(_ieee_div(h, 6.0), 1.0)
  return jnp.stack([_TWO_PI * h, s, v], axis=-1)


def kornia_hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """kornia 0.4.0 `hsv_to_rgb`, including its sequential-mask overwrite.

  kornia fills `out = hi` (the sector index, per channel) and then runs
  `out[out == k] = stack_k[out == k]` for k = 0..5 in turn; a value written
  for k = 0 that equals exactly 1.0 is matched again by k = 1. The loop below
  does the same element-wise selects in the same order.

  Args:
    hsv: float [..., 3] with h in radians (any real value), s, v.

  Returns:
    float32 [..., 3] RGB.
  """
  hsv = hsv.astype(jnp.float32)
  h = _ieee_div(hsv[..., 0], 2.0 * np.pi)
  s = hsv[..., 1]
  v = hsv[..., 2]
  hi = jnp.mod(jnp.floor(h * 6.0), 6.0)
  f = jnp.mod(h * 6.0, 6.0) - hi
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  stacks = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
  out = jnp.stack([hi, hi, hi], axis=-1)
  for k, chans in enumerate(stacks):
    out = jnp.where(out == float(k), jnp.stack(chans, axis=-1), out)
  return out


# ----------------------------------------------------------------------------
# Clean HSV (h in turns, [0, 1)).
# ----------------------------------------------------------------------------


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """Standard RGB -> HSV, h in turns [0, 1), channels last.

  Args:
    rgb: float [..., 3] in [0, 1].

  Returns:
    float32 [..., 3].
  """
  hsv = kornia_rgb_to_hsv(rgb)  # the forward transform has no quirk
  return hsv.at[..., 0].set(jnp.mod(hsv[..., 0] / _TWO_PI, 1.0))


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """Standard HSV -> RGB (h in turns, taken modulo 1), channels last.

  Args:
    hsv: float [..., 3].

  Returns:
    float32 [..., 3].
  """
  hsv = hsv.astype(jnp.float32)
  h = jnp.mod(hsv[..., 0], 1.0) * 6.0
  s, v = hsv[..., 1], hsv[..., 2]
  i = jnp.floor(h)
  f = h - i
  i = jnp.mod(i, 6.0).astype(jnp.int32)
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  table = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1),
      jnp.stack([p, v, t], -1), jnp.stack([p, q, v], -1),
      jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)], axis=-2)
  return jnp.take_along_axis(table, i[..., None, None], axis=-2)[..., 0, :]


# ----------------------------------------------------------------------------
# Colour jitter.
# ----------------------------------------------------------------------------


def _bc(x):
  """[B] per-image factor -> [B, 1, 1, 1] (broadcasts over [B, H, W, 3])."""
  return x[:, None, None, None]


def _grey(x):
  return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _kornia_ops(b, c, s, h):
  def bright(x):
    return jnp.clip(x + _bc(b - 1.0), 0.0, 1.0)

  def contrast(x):
    return jnp.clip(x * _bc(c), 0.0, 1.0)

  def sat(x):
    hsv = kornia_rgb_to_hsv(x)
    hsv = hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * s[:, None, None], 0, 1))
    return kornia_hsv_to_rgb(hsv)

  def hue(x):
    hsv = kornia_rgb_to_hsv(x)
    hsv = hsv.at[..., 0].set(
        jnp.fmod(hsv[..., 0] + _TWO_PI * h[:, None, None], _TWO_PI))
    return kornia_hsv_to_rgb(hsv)

  return [bright, contrast, sat, hue]


def _standard_ops(b, c, s, h):
  def bright(x):
    return jnp.clip(x * _bc(b), 0.0, 1.0)

  def contrast(x):
    mean = jnp.mean(_grey(x), axis=(1, 2))
    return jnp.clip(_bc(c) * x + _bc((1.0 - c) * mean), 0.0, 1.0)

  def sat(x):
    grey = _grey(x)[..., None]
    return jnp.clip(_bc(s) * x + (1.0 - _bc(s)) * grey, 0.0, 1.0)

  def hue(x):
    hsv = rgb_to_hsv(x)
    hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + h[:, None, None], 1.0))
    return hsv_to_rgb(hsv)

  return [bright, contrast, sat, hue]


def jitter_params(rng: jax.Array, batch_size: int,
                  strength: float = 0.25) -> dict:
  """Draws per-image jitter factors and the batch-shared op order.

  Args:
    rng: jax key.
    batch_size: B.
    strength: ColorJitter(strength x 4); 0.25 in the reference.

  Returns:
    dict with float32 [B] `brightness`, `contrast`, `saturation` in
    [1 - strength, 1 + strength], `hue` in [-strength, strength] (turns),
    and int32 [4] `order` (a permutation of 0..3 = brightness, contrast,
    saturation, hue).
  """
  kb, kc, kh, ks, ko = jax.random.split(rng, 5)
  u = lambda k, lo, hi: jax.random.uniform(k, (batch_size,), jnp.float32,
                                           lo, hi)
  return {
      "brightness": u(kb, 1.0 - strength, 1.0 + strength),
      "contrast": u(kc, 1.0 - strength, 1.0 + strength),
      "hue": u(kh, -strength, strength),
      "saturation": u(ks, 1.0 - strength, 1.0 + strength),
      "order": jax.random.permutation(ko, 4).astype(jnp.int32),
  }


def apply_color_jitter(images: jax.Array, params: dict,
                       mode: str = "kornia04") -> jax.Array:
  """Applies the four jitter ops in `params["order"]` (see module doc).

  Args:
    images: float [B, H, W, 3] in [0, 1].
    params: output of `jitter_params`.
    mode: "kornia04" (default, reference) or "standard".

  Returns:
    float32 [B, H, W, 3].
  """
  if mode not in MODES:
    raise ValueError(f"color jitter mode must be one of {MODES}, got {mode!r}.")
  make = _kornia_ops if mode == "kornia04" else _standard_ops
  ops = make(params["brightness"], params["contrast"], params["saturation"],
             params["hue"])
  x = images.astype(jnp.float32)
  for pos in range(4):
    x = jax.lax.switch(params["order"][pos], ops, x)
  return x


def color_jitter(rng: jax.Array, images: jax.Array, mode: str = "kornia04",
                 strength: float = 0.25) -> jax.Array:
  """Random colour jitter (always applied; gating is in `strong_augment`).

  Args:
    rng: jax key.
    images: float [B, H, W, 3] in [0, 1].
    mode: "kornia04" (default; reference) or "standard".
    strength: jitter strength (0.25).

  Returns:
    float32 [B, H, W, 3].
  """
  return apply_color_jitter(
      images, jitter_params(rng, images.shape[0], strength), mode)


# ----------------------------------------------------------------------------
# Gaussian blur.
# ----------------------------------------------------------------------------


def blur_kernel_size(length: int) -> int:
  """floor(ceil(0.1 L) - 0.5 + ceil(0.1 L) mod 2); 51 for L = 512 (odd).

  Args:
    length: image height or width in pixels.

  Returns:
    The kernel size along that axis.
  """
  c = math.ceil(0.1 * length)
  return int(math.floor(c - 0.5 + c % 2))


def gaussian_kernel1d(size: int, sigma: jax.Array) -> jax.Array:
  """Normalised 1-D Gaussian(s) as in kornia `gaussian`.

  Args:
    size: static kernel size k.
    sigma: float scalar or [B].

  Returns:
    float32 [k] (scalar sigma) or [B, k].
  """
  x = jnp.arange(size, dtype=jnp.float32) - size // 2
  if size % 2 == 0:
    x = x + 0.5
  sigma = jnp.asarray(sigma, jnp.float32)
  g = jnp.exp(-(x ** 2) / (2.0 * sigma[..., None] ** 2))
  return g / jnp.sum(g, axis=-1, keepdims=True)


def _depthwise(x: jax.Array, kernels: jax.Array, axis: int) -> jax.Array:
  """Valid correlation of every (image, channel) with its own 1-D kernel.

  Args:
    x: [B, H, W, C] (already padded along `axis`).
    kernels: [B, k].
    axis: 1 (vertical) or 2 (horizontal).

  Returns:
    [B, H', W', C].
  """
  b, h, w, c = x.shape
  k = kernels.shape[1]
  lhs = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, w, b * c)
  rhs = jnp.repeat(kernels.T, c, axis=1)  # [k, B*C], index b*C + c
  rhs = rhs.reshape((k, 1, 1, b * c) if axis == 1 else (1, k, 1, b * c))
  out = jax.lax.conv_general_dilated(
      lhs, rhs, (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=b * c,
      precision=jax.lax.Precision.HIGHEST)
  _, ho, wo, _ = out.shape
  return jnp.transpose(out.reshape(ho, wo, b, c), (2, 0, 1, 3))


def gaussian_blur_with_sigma(images: jax.Array, sigma: jax.Array) -> jax.Array:
  """Separable Gaussian blur, reflect padding, one sigma per image.

  Args:
    images: float [B, H, W, C].
    sigma: float [B].

  Returns:
    float32 [B, H, W, C].
  """
  _, h, w, _ = images.shape
  ky, kx = blur_kernel_size(h), blur_kernel_size(w)
  x = images.astype(jnp.float32)
  x = jnp.pad(x, ((0, 0), ((ky - 1) // 2, (ky - 1) // 2),
                  ((kx - 1) // 2, (kx - 1) // 2), (0, 0)), mode="reflect")
  x = _depthwise(x, gaussian_kernel1d(ky, sigma), axis=1)
  return _depthwise(x, gaussian_kernel1d(kx, sigma), axis=2)


def blur_sigma(rng: jax.Array, batch_size: int,
               sigma_range: Tuple[float, float] = (0.15, 1.15),
               per_image_sigma: bool = True) -> jax.Array:
  """Draws the blur sigma ~ U(sigma_range) of every image.

  Args:
    rng: jax key.
    batch_size: B.
    sigma_range: (low, high).
    per_image_sigma: one sigma per image (default), or one for the whole
      batch as the reference's SSL step draws it (`np.random.uniform` once
      per call).

  Returns:
    float32 [B].
  """
  n = batch_size if per_image_sigma else 1
  sigma = jax.random.uniform(rng, (n,), jnp.float32, sigma_range[0],
                             sigma_range[1])
  return jnp.broadcast_to(sigma, (batch_size,))


def gaussian_blur(rng: jax.Array, images: jax.Array,
                  sigma_range: Tuple[float, float] = (0.15, 1.15),
                  per_image_sigma: bool = True) -> jax.Array:
  """Gaussian blur with sigma ~ U(sigma_range) (always applied).

  Args:
    rng: jax key.
    images: float [B, H, W, C].
    sigma_range: (low, high).
    per_image_sigma: see `blur_sigma`.

  Returns:
    float32 [B, H, W, C].
  """
  sigma = blur_sigma(rng, images.shape[0], sigma_range, per_image_sigma)
  return gaussian_blur_with_sigma(images, sigma)


def augment_gates(rng: jax.Array, jitter_prob: float = 0.8,
                  blur_prob: float = 0.5) -> Tuple[jax.Array, jax.Array]:
  """Per-batch gates and the keys of the two augmentations.

  Args:
    rng: jax key (the one given to `strong_augment`).
    jitter_prob: probability of colour jitter.
    blur_prob: probability of blur.

  Returns:
    ((do_jitter, do_blur) bool scalars, (jitter_key, blur_key)).
  """
  kgj, kgb, kj, kb = jax.random.split(rng, 4)
  # Reference: `random.uniform(0, 1) > 0.2` and `> 0.5`.
  do_jitter = jax.random.uniform(kgj) > 1.0 - jitter_prob
  do_blur = jax.random.uniform(kgb) > 1.0 - blur_prob
  return (do_jitter, do_blur), (kj, kb)


def augment_draws(
    rng: jax.Array,
    batch_size: int,
    jitter_prob: float = 0.8,
    blur_prob: float = 0.5,
    strength: float = 0.25,
    sigma_range: Tuple[float, float] = (0.15, 1.15),
    per_image_sigma: bool = True,
) -> dict:
  """Every draw of `strong_augment` for a batch of ``batch_size`` images.

  Args:
    rng: jax key.
    batch_size: B.
    jitter_prob, blur_prob, strength, sigma_range, per_image_sigma: see
      `strong_augment`.

  Returns:
    dict with bool scalars ``do_jitter`` and ``do_blur`` (the per-batch
    gates), ``jitter`` (`jitter_params`) and float32 [B] ``sigma``.
  """
  (do_jitter, do_blur), (kj, kb) = augment_gates(rng, jitter_prob, blur_prob)
  return {
      "do_jitter": do_jitter,
      "do_blur": do_blur,
      "jitter": jitter_params(kj, batch_size, strength),
      "sigma": blur_sigma(kb, batch_size, sigma_range, per_image_sigma),
  }


def strong_augment_with_draws(images: jax.Array, draws: dict,
                              mode: str = "kornia04") -> jax.Array:
  """Colour jitter if ``draws["do_jitter"]``, then blur if ``do_blur``.

  Args:
    images: float [B, H, W, 3] RGB in [0, 1].
    draws: `augment_draws` output (or the same structure recorded
      elsewhere).
    mode: "kornia04" (default) or "standard".

  Returns:
    float32 [B, H, W, 3].
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f"strong_augment: images must be [B, H, W, 3], got {images.shape}.")
  x = images.astype(jnp.float32)
  x = jax.lax.cond(draws["do_jitter"],
                   lambda y: apply_color_jitter(y, draws["jitter"], mode),
                   lambda y: y, x)
  return jax.lax.cond(draws["do_blur"],
                      lambda y: gaussian_blur_with_sigma(y, draws["sigma"]),
                      lambda y: y, x)


def strong_augment(
    rng: jax.Array,
    images: jax.Array,
    mode: str = "kornia04",
    jitter_prob: float = 0.8,
    blur_prob: float = 0.5,
    strength: float = 0.25,
    sigma_range: Tuple[float, float] = (0.15, 1.15),
    per_image_sigma: bool = True,
) -> jax.Array:
  """Strong augmentation of the mixed images (the reference's kornia one).

  Colour jitter with probability `jitter_prob`, then Gaussian blur with
  probability `blur_prob`; both gates are drawn once for the whole batch
  (`augment_gates`). The default mode "kornia04" reproduces the kornia
  0.4.0 jitter that the paper's numbers used. Probability maps are never
  augmented. Draws with `augment_draws` and applies
  `strong_augment_with_draws`.

  Args:
    rng: jax key.
    images: float [B, H, W, 3] RGB in [0, 1].
    mode: "kornia04" (default) or "standard".
    jitter_prob: probability of colour jitter.
    blur_prob: probability of blur.
    strength: jitter strength.
    sigma_range: blur sigma range.
    per_image_sigma: see `blur_sigma`.

  Returns:
    float32 [B, H, W, 3].
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f"strong_augment: images must be [B, H, W, 3], got {images.shape}.")
  draws = augment_draws(rng, images.shape[0], jitter_prob, blur_prob,
                        strength, sigma_range, per_image_sigma)
  return strong_augment_with_draws(images, draws, mode)
