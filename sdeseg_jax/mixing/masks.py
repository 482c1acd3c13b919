"""Mixing masks: DepthMix, ClassMix / DACS, CutMix and the all-ones mask.

All masks are `[B, H, W]` float32 with values in {0, 1}; 1 means "keep the
pixel of the first image" in `mix(mask, a, b)`. Everything is fixed-shape and
jit/vmap friendly: no `jnp.unique`, no host round trips, randomness only from
jax keys. Every mask that draws comes in two forms: one that takes the draw
(`class_mix_mask_from_choice`, `cut_mix_mask_from_box`, `margin_from_flips`)
and does the work, and the keyed form (`class_mix_mask`, `cut_mix_mask`,
`random_margin_sign`) that draws and calls it, so a recorded draw (e.g. the
reference's) can be replayed exactly.

Pairing of images inside one batch (DepthMix, intra-domain ClassMix):
`pair_partner_index(B)` pairs image 2k with 2k+1 and vice versa, i.e.
(0,1),(1,0),(2,3),(3,2),... This generalises the reference, which asserts
B == 2 and uses the pairs (0,1),(1,0) (`train.py`, `transformsgpu.mix` with
partner (i+1) mod B, identical for B = 2). Every image is the partner of its
partner, which keeps the reference's symmetric pairs for any even B.
"""

from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp

from sdeseg_jax.constants import IGNORE_INDEX


def pair_partner_index(batch_size: int) -> jax.Array:
  """Partner of each image: [1, 0, 3, 2, ...] (pairs (2k, 2k+1)).

  Args:
    batch_size: even static batch size B.

  Returns:
    int32 [B] permutation with partner[partner[i]] == i.

  Raises:
    ValueError: if `batch_size` is odd or not positive.
  """
  if batch_size <= 0 or batch_size % 2:
    raise ValueError(
        f"pair_partner_index: batch_size must be a positive even number, "
        f"got {batch_size}.")
  return jnp.arange(batch_size, dtype=jnp.int32) ^ 1


def normalize_disparity(disp: jax.Array, eps: float = 0.0) -> jax.Array:
  """Per-image min-max normalisation of a disparity map to [0, 1].

  This is how the reference normalises the online student disparity for
  DepthMix (212) and the exported pseudo-disparity. A constant map
  (max == min, where the reference would divide by zero) maps to 0.

  Args:
    disp: [B, H, W] disparity (larger = closer).
    eps: added to the denominator.

  Returns:
    float32 [B, H, W] in [0, 1].
  """
  disp = disp.astype(jnp.float32)
  lo = jnp.min(disp, axis=(1, 2), keepdims=True)
  hi = jnp.max(disp, axis=(1, 2), keepdims=True)
  den = hi - lo + eps
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, (disp - lo) / safe, 0.0)


def depth_compare_mask(
    disp_a: jax.Array,
    disp_b: jax.Array,
    margin: Union[float, jax.Array] = 0.03,
    foreground_threshold: float = 0.0,
) -> jax.Array:
  """M = [d_a >= d_b - margin] * [d_a >= foreground_threshold].

  Pixels of image a that are closer than image b (or within `margin`) are
  kept. Used directly for the cross-domain mix (a = source, b = target).

  Args:
    disp_a: [B, H, W] disparity of the images whose pixels the mask keeps.
    disp_b: [B, H, W] disparity of the images pasted underneath.
    margin: scalar or [B] per-pair margin (in disparity units).
    foreground_threshold: minimum disparity of a kept pixel.

  Returns:
    float32 [B, H, W] mask in {0, 1}.
  """
  margin = jnp.asarray(margin, jnp.float32)
  if margin.ndim == 1:
    margin = margin[:, None, None]
  keep = (disp_a >= disp_b - margin) & (disp_a >= foreground_threshold)
  return keep.astype(jnp.float32)


def depth_mix_mask(
    disp: jax.Array,
    partner_index: jax.Array,
    margin: Union[float, jax.Array] = 0.03,
    foreground_threshold: float = 0.0,
) -> jax.Array:
  """DepthMix mask M_i = [d_i >= d_j - margin] * [d_i >= ft], j = partner(i).

  `disp` should be per-image min-max normalised disparity
  (`normalize_disparity`), since the margin 0.03 is in those units, as in the
  reference's ``depthcomp`` mask.
  The masks of a pair are not complementary: where |d_i - d_j| <= margin both
  mixed images keep their own pixel.

  Args:
    disp: [B, H, W] normalised disparity (larger = closer).
    partner_index: int [B], e.g. `pair_partner_index(B)`.
    margin: scalar or [B] margin.
    foreground_threshold: `depthcomp_foreground_threshold` (0 = no effect).

  Returns:
    float32 [B, H, W] mask in {0, 1}.
  """
  return depth_compare_mask(disp, jnp.take(disp, partner_index, axis=0),
                            margin, foreground_threshold)


def margin_from_flips(flip: jax.Array, margin: float = 0.03) -> jax.Array:
  """Per-pair margin ``-margin`` where ``flip``, else ``+margin``.

  Args:
    flip: bool [B], the drawn sign flips.
    margin: magnitude of the margin.

  Returns:
    float32 [B].
  """
  return jnp.where(jnp.asarray(flip), -margin, margin).astype(jnp.float32)


def random_margin_sign(rng: jax.Array, batch_size: int,
                       margin: float = 0.03) -> jax.Array:
  """Per-pair margin whose sign flips with probability 0.5 (cross-domain mix).

  Reference (`train_step_domain_mixing`): `margin *= -1` when
  `random.random() > 0.5`, drawn once per source/target pair.

  Args:
    rng: jax key.
    batch_size: number of pairs B.
    margin: magnitude of the margin.

  Returns:
    float32 [B] with entries +margin or -margin (`margin_from_flips`).
  """
  return margin_from_flips(jax.random.bernoulli(rng, 0.5, (batch_size,)),
                           margin)


def _class_slots(labels: jax.Array, num_classes: int) -> jax.Array:
  """int32 [B, H*W] class slot of every pixel: its class, or C for the
  ignore value and anything outside [0, C)."""
  labels = labels.astype(jnp.int32)
  in_range = (labels >= 0) & (labels < num_classes)
  return jnp.where(in_range, labels, num_classes).reshape(labels.shape[0], -1)


def present_classes(labels: jax.Array, num_classes: int = 19,
                    include_ignore: bool = False) -> jax.Array:
  """Which class slots occur in each image (fixed shape, no `jnp.unique`).

  Args:
    labels: int [B, H, W].
    num_classes: C.
    include_ignore: count slot C (the ignore value and any value outside
      [0, C)) as a class, as DACS does.

  Returns:
    bool [B, C+1].
  """
  flat = _class_slots(labels, num_classes)
  b = flat.shape[0]
  present = jnp.zeros((b, num_classes + 1), jnp.bool_)
  present = present.at[jnp.arange(b)[:, None], flat].set(True)
  if not include_ignore:
    present = present.at[:, num_classes].set(False)
  return present


def choose_classes(present: jax.Array, scores: jax.Array,
                   choose: str = "floor") -> jax.Array:
  """The ``floor(n/2)`` or ``ceil(n/2)`` present classes of lowest score.

  Ranking i.i.d. uniform scores of the present classes draws them uniformly
  without replacement.

  Args:
    present: bool [B, C+1] (`present_classes`).
    scores: float [B, C+1], e.g. uniform in [0, 1) (the draw).
    choose: "floor" (ClassMix) or "ceil" (DACS).

  Returns:
    bool [B, C+1], the chosen class slots.
  """
  if choose not in ("floor", "ceil"):
    raise ValueError(
        f"class_mix_mask: choose must be 'floor' or 'ceil', got {choose!r}.")
  n = jnp.sum(present, axis=1)  # [B]
  k = n // 2 if choose == "floor" else (n + 1) // 2
  scores = jnp.where(present, scores, 2.0)  # absent classes rank last
  rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  return present & (rank < k[:, None])


def class_mix_mask_from_choice(labels: jax.Array, chosen: jax.Array,
                               num_classes: int = 19) -> jax.Array:
  """ClassMix / DACS mask of a given class choice: 1 on its pixels.

  Args:
    labels: int [B, H, W].
    chosen: bool [B, C+1] class slots to keep (slot C: the ignore value and
      any value outside [0, C)), e.g. `choose_classes(...)` or a recorded
      draw of the reference.
    num_classes: C.

  Returns:
    float32 [B, H, W] mask.
  """
  chosen = jnp.asarray(chosen, jnp.bool_)
  if chosen.shape != (labels.shape[0], num_classes + 1):
    raise ValueError(
        f"class_mix_mask_from_choice: chosen must be [B, C+1] = "
        f"[{labels.shape[0]}, {num_classes + 1}], got {chosen.shape}.")
  mask = jnp.take_along_axis(chosen, _class_slots(labels, num_classes),
                             axis=1)
  return mask.reshape(labels.shape).astype(jnp.float32)


def class_mix_mask(
    labels: jax.Array,
    rng: jax.Array,
    num_classes: int = 19,
    ignore: int = IGNORE_INDEX,
    include_ignore: bool = False,
    choose: str = "floor",
) -> jax.Array:
  """ClassMix / DACS mask: pixels of randomly chosen present classes.

  For each image the n classes present in `labels` are found with a fixed
  shape presence vector [B, C+1] (slot C collects `ignore` and any value
  outside [0, C)); `floor(n/2)` (ClassMix, ignore excluded) or `ceil(n/2)`
  (DACS, `include_ignore=True` so 250 counts as a class and can be chosen)
  of them are drawn uniformly without replacement by ranking i.i.d. uniform
  scores of the present classes (`choose_classes`); the mask is
  `class_mix_mask_from_choice` of that choice.

  With ground-truth mixing the reference builds the ClassMix mask from the
  argmax of the GT-substituted probabilities
  (`mix.probs_with_ground_truth`), where labeled-ignore pixels have argmax 0
  (road); pass that argmax to reproduce it.

  Args:
    labels: int [B, H, W] (argmax pseudo-labels or ground truth).
    rng: jax key.
    num_classes: C.
    ignore: the ignore index (250); every value outside [0, C) shares slot
      C with it.
    include_ignore: count the ignore value as a class (DACS).
    choose: "floor" (ClassMix) or "ceil" (DACS).

  Returns:
    float32 [B, H, W] mask, 1 on pixels of the chosen classes.
  """
  del ignore  # any value outside [0, C) is the ignore slot
  present = present_classes(labels, num_classes, include_ignore)
  scores = jax.random.uniform(rng, present.shape)
  chosen = choose_classes(present, scores, choose)
  return class_mix_mask_from_choice(labels, chosen, num_classes)


def cut_mix_mask_from_box(shape: Sequence[int], x0: jax.Array,
                          y0: jax.Array, box_w: jax.Array,
                          box_h: jax.Array) -> jax.Array:
  """CutMix mask of given boxes: 0 inside each image's box, 1 outside.

  Args:
    shape: (B, H, W) static.
    x0, y0: int [B] top-left corner of each box.
    box_w, box_h: int [B] box width and height.

  Returns:
    float32 [B, H, W] mask.
  """
  b, h, w = (int(s) for s in shape)
  del b
  col = lambda v: jnp.asarray(v, jnp.int32)[:, None, None]
  x0, y0, box_w, box_h = col(x0), col(y0), col(box_w), col(box_h)
  yy = jnp.arange(h)[None, :, None]
  xx = jnp.arange(w)[None, None, :]
  inside = ((yy >= y0) & (yy < y0 + box_h) & (xx >= x0) & (xx < x0 + box_w))
  return jnp.where(inside, 0.0, 1.0).astype(jnp.float32)


def cut_mix_mask(rng: jax.Array, shape: Sequence[int],
                 area: float = 0.5) -> jax.Array:
  """CutMix mask: 0 inside a random box of `area`·H·W pixels, 1 outside.

  Follows `transformmasks.generate_cutout_mask` (unused by the reference's
  training paths): box width w ~ U{ceil(area·W), ..., W}, height
  h = round(area·H·W / w), top-left corner uniform; one box per image
  (`cut_mix_mask_from_box`).

  Args:
    rng: jax key.
    shape: (B, H, W) static.
    area: box area as a fraction of the image, in (0, 1].

  Returns:
    float32 [B, H, W] mask.
  """
  if not 0.0 < area <= 1.0:
    raise ValueError(f"cut_mix_mask: area must be in (0, 1], got {area}.")
  b, h, w = (int(s) for s in shape)
  kw, kx, ky = jax.random.split(rng, 3)
  min_w = max(1, int(-(-area * w // 1)))
  box_w = jax.random.randint(kw, (b,), min_w, w + 1)
  box_h = jnp.clip(jnp.round(area * h * w / box_w).astype(jnp.int32), 1, h)
  x0 = jnp.floor(jax.random.uniform(kx, (b,)) * (w - box_w + 1))
  y0 = jnp.floor(jax.random.uniform(ky, (b,)) * (h - box_h + 1))
  return cut_mix_mask_from_box(shape, x0.astype(jnp.int32),
                               y0.astype(jnp.int32), box_w, box_h)


def ones_mask(shape: Tuple[int, int, int]) -> jax.Array:
  """All-ones mask (`mix_mask: None`, pseudo-labels only): x' = x.

  Args:
    shape: (B, H, W).

  Returns:
    float32 [B, H, W] of ones.
  """
  return jnp.ones(shape, jnp.float32)
