"""The one consistency loss of the mixing branches (SSL, SSDA TDM and CDM).

Every mixing branch of the method is the same computation: a mask mixes two
batches of images (an image with its pair partner, or source into target),
the same mask mixes the teacher's targets, the mixed images are strongly
augmented (colour jitter + blur), and the student's cross-entropy against
the mixed targets is weighted per pixel by the targets' confidence. What
differs is only

* ``mask_fn(rng) -> [B, H, W]`` (DepthMix, ClassMix, CutMix, DACS, ...),
* ``target_fn(mask) -> (labels [B, H, W] int32, conf [B, H, W])``,
* ``weight_fn(mask, conf) -> [B, H, W]`` pixel weights,

so ``consistency_loss`` takes those three and the student forward;
``mixed_batch`` is its part before the student (what the report's
illustration and the step-cost benchmark run). ``intra_batch`` builds the
functions of the intra-batch mix (SSL's unlabeled branch, SSDA's
target-domain DepthMix) from a ``config.mix`` section (``mix_config``).

The ``config.mix`` keys (``mix_config``): ``mask`` (depthmix | classmix |
cutmix | none), ``depth_source`` (pseudo | online | gt, SSL), ``margin``,
``foreground_threshold``, ``use_gt`` (labeled images of the unlabeled
stream use their one-hot ground truth), ``tau``, ``per_image_q`` (the
paper's one q per image with ">" instead of the reference's one q per batch
with ">="), ``weight``, ``teacher_mode`` (train | eval), ``augment``
(kornia04 | standard | none), ``jitter_prob``, ``blur_prob``,
``cutmix_area``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections as mlc

from sdeseg_jax.constants import IGNORE_INDEX
from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.mixing import augment
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import mix as mix_lib
from sdeseg_jax.mixing import pseudo_label
from sdeseg_jax.mixing import teacher as teacher_lib

MASKS = ("depthmix", "classmix", "cutmix", "none")
DEPTH_SOURCES = ("pseudo", "online", "gt")
AUGMENTS = ("kornia04", "standard", "none")

MaskFn = Callable[[jax.Array], jax.Array]
TargetFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
WeightFn = Callable[[jax.Array, jax.Array], jax.Array]


def mix_config(**overrides) -> mlc.ConfigDict:
  """The ``config.mix`` section (module docstring) with the reference's
  values."""
  c = mlc.ConfigDict()
  c.mask = "depthmix"
  c.depth_source = "pseudo"
  c.margin = 0.03
  c.foreground_threshold = 0.0
  c.use_gt = True
  c.tau = pseudo_label.TAU
  c.per_image_q = False
  c.weight = 1.0
  c.teacher_mode = "train"
  c.augment = "kornia04"
  c.jitter_prob = 0.8
  c.blur_prob = 0.5
  c.cutmix_area = 0.5
  c.update(overrides)
  return c


def check_mix_config(cfg: mlc.ConfigDict, *, teacher_batch_stats: str,
                     prefix: str = "config.mix") -> None:
  """Raises ValueError naming the ``config.mix`` key that is invalid.

  Args:
    cfg: ``config.mix``.
    teacher_batch_stats: ``config.train.teacher_batch_stats``.
    prefix: the config path of ``cfg``, for the messages.
  """
  for key, allowed in (("mask", MASKS), ("depth_source", DEPTH_SOURCES),
                       ("teacher_mode", teacher_lib.TEACHER_MODES),
                       ("augment", AUGMENTS)):
    if cfg[key] not in allowed:
      raise ValueError(f"{prefix}.{key}={cfg[key]!r}; choose one of "
                       f"{allowed}")
  teacher_lib.check_teacher_config(cfg.teacher_mode, teacher_batch_stats,
                                   f"{prefix}.teacher_mode")


def strong_augment(cfg: mlc.ConfigDict, rng: jax.Array,
                   images: jax.Array) -> jax.Array:
  """Colour jitter + blur of ``config.mix.augment`` (``none``: identity),
  gated with ``jitter_prob`` / ``blur_prob``."""
  if cfg.augment == "none":
    return images.astype(jnp.float32)
  return augment.strong_augment(rng, images, mode=cfg.augment,
                                jitter_prob=cfg.jitter_prob,
                                blur_prob=cfg.blur_prob)


class Mixed(NamedTuple):
  """A mixed batch: ``mask`` (1 = the first batch's pixel), ``image``
  (mixed, not augmented), ``augmented``, ``label``, ``conf`` (the targets'
  confidence P') and ``weight`` (pixel weights), all ``[B, H, W(, 3)]``."""
  mask: jax.Array
  image: jax.Array
  augmented: jax.Array
  label: jax.Array
  conf: jax.Array
  weight: jax.Array


def mixed_batch(cfg: mlc.ConfigDict, first: jax.Array, second: jax.Array,
                mask_fn: MaskFn, target_fn: TargetFn, weight_fn: WeightFn, *,
                mask_rng: jax.Array, aug_rng: jax.Array) -> Mixed:
  """Mask, mixed images and targets, strong augmentation (no network).

  Args:
    cfg: ``config.mix`` (``augment``, ``jitter_prob``, ``blur_prob``).
    first, second: ``[B, H, W, 3]`` float images; the mix keeps ``first``
      where the mask is 1.
    mask_fn, target_fn, weight_fn: see the module docstring.
    mask_rng, aug_rng: keys of the mask draw and the augmentation.
  """
  mask = jax.lax.stop_gradient(mask_fn(mask_rng))
  image = mix_lib.mix(mask, first, second)
  label, conf = target_fn(mask)
  weight = jax.lax.stop_gradient(weight_fn(mask, conf))
  return Mixed(mask=mask, image=image,
               augmented=strong_augment(cfg, aug_rng, image),
               label=label, conf=conf, weight=weight)


def consistency_loss(cfg: mlc.ConfigDict, first: jax.Array,
                     second: jax.Array, mask_fn: MaskFn,
                     target_fn: TargetFn, weight_fn: WeightFn, *,
                     student_fn: Callable[[jax.Array], tuple[jax.Array, Any]],
                     mask_rng: jax.Array, aug_rng: jax.Array
                     ) -> tuple[jax.Array, Mixed, Any]:
  """The student on a mixed, strongly augmented batch against its targets.

  Args:
    cfg, first, second, mask_fn, target_fn, weight_fn, mask_rng, aug_rng:
      as ``mixed_batch``.
    student_fn: ``augmented images [B, H, W, 3] -> (logits [B, H, W, C],
      aux)`` (the caller threads its BatchNorm statistics through ``aux``).

  Returns:
    ``(loss, mixed, aux)``: the pixel-weighted cross-entropy (ignore 250,
    the reference's denominators), the ``Mixed`` batch and ``student_fn``'s
    aux.
  """
  mixed = mixed_batch(cfg, first, second, mask_fn=mask_fn,
                      target_fn=target_fn, weight_fn=weight_fn,
                      mask_rng=mask_rng, aug_rng=aug_rng)
  logits, aux = student_fn(mixed.augmented)
  loss = cross_entropy(logits, mixed.label, IGNORE_INDEX,
                       pixel_weights=mixed.weight)
  return loss, mixed, aux


# -- the intra-batch mix (SSL unlabeled branch, SSDA target-domain mix) ------


def disparity_from_depth(depth: jax.Array) -> jax.Array:
  """``1 / depth`` where depth > 0, else 0 (invalid / sky = far)."""
  depth = depth.astype(jnp.float32)
  return jnp.where(depth > 0, 1.0 / jnp.where(depth > 0, depth, 1.0), 0.0)


def mix_depth(source: str, batch: Mapping[str, Any],
              student_disp: jax.Array | None = None) -> jax.Array:
  """The normalised disparity that DepthMix compares, ``[B, H, W]``.

  Args:
    source: ``pseudo`` (``batch["pseudo_depth"]`` as delivered: the
      exported per-image normalised, quantised pseudo-disparity, used
      unchanged as in the reference), ``online`` (``student_disp`` min-max
      normalised per image, unquantised) or ``gt`` (``batch["depth"]`` in
      metres -> disparity -> min-max normalised).
    batch: the unlabeled batch.
    student_disp: ``[B, H, W, 1]`` or ``[B, H, W]`` student disparity at
      the crop resolution (``online`` only).

  Returns:
    float32 ``[B, H, W]`` in [0, 1], stop-gradient.
  """
  if source == "pseudo":
    if "pseudo_depth" not in batch:
      raise ValueError("config.mix.depth_source='pseudo' needs the "
                       "unlabeled stream to deliver pseudo_depth (set its "
                       "pseudo_depth_dir)")
    d = batch["pseudo_depth"].astype(jnp.float32)
  elif source == "online":
    if student_disp is None:
      raise ValueError("config.mix.depth_source='online' needs the "
                       "student's disparity (a model with depth outputs)")
    d = student_disp.astype(jnp.float32)
    d = masks_lib.normalize_disparity(d[..., 0] if d.ndim == 4 else d)
  elif source == "gt":
    if "depth" not in batch:
      raise ValueError("config.mix.depth_source='gt' needs the unlabeled "
                       "stream to deliver depth (with_depth=True)")
    d = masks_lib.normalize_disparity(disparity_from_depth(batch["depth"]))
  else:
    raise ValueError(f"config.mix.depth_source={source!r}; choose one of "
                     f"{DEPTH_SOURCES}")
  return jax.lax.stop_gradient(d)


def mix_mask(cfg: mlc.ConfigDict, rng: jax.Array, shape, *,
             class_labels: jax.Array | None = None,
             disp: jax.Array | None = None,
             num_classes: int = 19) -> jax.Array:
  """The intra-batch mask of ``config.mix.mask``, ``[B, H, W]`` float32.

  Args:
    cfg: ``config.mix``.
    rng: key (ClassMix class choice, CutMix box).
    shape: ``(B, H, W)``.
    class_labels: ``[B, H, W]`` argmax of the (GT-substituted) teacher
      probabilities, for ClassMix.
    disp: ``[B, H, W]`` normalised disparity (``mix_depth``), for DepthMix.
    num_classes: C.

  Returns:
    1 where the mixed image keeps its own pixel, 0 where it takes its
    partner's (partner = ``masks.pair_partner_index``).
  """
  b = shape[0]
  if cfg.mask == "depthmix":
    return masks_lib.depth_mix_mask(disp, masks_lib.pair_partner_index(b),
                                    cfg.margin, cfg.foreground_threshold)
  if cfg.mask == "classmix":
    return masks_lib.class_mix_mask(class_labels, rng, num_classes)
  if cfg.mask == "cutmix":
    return masks_lib.cut_mix_mask(rng, shape, cfg.cutmix_area)
  if cfg.mask == "none":
    return masks_lib.ones_mask(tuple(shape))
  raise ValueError(f"config.mix.mask={cfg.mask!r}; choose one of {MASKS}")


class IntraBatch(NamedTuple):
  """The arguments of ``consistency_loss`` for an intra-batch mix."""
  first: jax.Array
  second: jax.Array
  mask_fn: MaskFn
  target_fn: TargetFn
  weight_fn: WeightFn


def intra_batch(cfg: mlc.ConfigDict, images: jax.Array, probs: jax.Array,
                *, labels: jax.Array | None = None,
                is_labeled: jax.Array | None = None,
                disp: jax.Array | None = None) -> IntraBatch:
  """Every image mixed with its pair partner (i, i^1), targets alike.

  Args:
    cfg: ``config.mix``.
    images: ``[B, H, W, 3]`` float (B even).
    probs: ``[B, H, W, C]`` teacher softmax.
    labels, is_labeled: GT ``[B, H, W]`` and ``[B]`` of the unlabeled stream
      (used when ``cfg.use_gt``; labeled pixels then have confidence 1 and
      labeled-ignore pixels confidence 0 and label 250).
    disp: ``[B, H, W]`` normalised disparity (DepthMix).

  Returns:
    ``IntraBatch``: the weights are ``q`` (``tau``, ``per_image_q``) of the
    mixed confidences, the reference's pseudo-label weighting.
  """
  partner = masks_lib.pair_partner_index(images.shape[0])
  use_gt = cfg.use_gt and labels is not None and is_labeled is not None
  if use_gt:
    target_probs = mix_lib.probs_with_ground_truth(probs, labels, is_labeled)
  else:
    target_probs = probs.astype(jnp.float32)
  class_labels = jnp.argmax(target_probs, axis=-1).astype(jnp.int32)

  def mask_fn(rng):
    return mix_mask(cfg, rng, images.shape[:3], class_labels=class_labels,
                    disp=disp, num_classes=probs.shape[-1])

  def target_fn(mask):
    conf, label = mix_lib.mix_teacher_targets(
        mask, probs, partner, labels if use_gt else None,
        is_labeled if use_gt else None)
    return label, conf

  def weight_fn(mask, conf):
    del mask
    return pseudo_label.pixel_weights(conf, cfg.tau, cfg.per_image_q)

  return IntraBatch(images, jnp.take(images, partner, axis=0), mask_fn,
                    target_fn, weight_fn)


def mix_batch(cfg: mlc.ConfigDict, rng: jax.Array, images: jax.Array,
              probs: jax.Array, *, labels: jax.Array | None = None,
              is_labeled: jax.Array | None = None,
              disp: jax.Array | None = None) -> dict[str, jax.Array]:
  """The intra-batch mix without augmentation (illustrations, tests).

  Returns:
    ``{"image", "conf", "label", "mask"}`` of ``intra_batch`` with the mask
    drawn from ``rng``.
  """
  ib = intra_batch(cfg, images, probs, labels=labels, is_labeled=is_labeled,
                   disp=disp)
  mask = jax.lax.stop_gradient(ib.mask_fn(rng))
  label, conf = ib.target_fn(mask)
  return {"image": mix_lib.mix(mask, ib.first, ib.second), "conf": conf,
          "label": label, "mask": mask}


def pseudo_label_loss(cfg: mlc.ConfigDict, logits: jax.Array,
                      conf: jax.Array, labels: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """``weight * mean_{B*H*W}(q * CE)`` of a mixed batch.

  Args:
    cfg: ``config.mix`` (``tau``, ``per_image_q``, ``weight``).
    logits: ``[B, H, W, C]`` student logits on the mixed images.
    conf: ``[B, H, W]`` mixed max probabilities P'.
    labels: ``[B, H, W]`` mixed pseudo labels (250 = ignore).

  Returns:
    ``(loss, q)`` with ``q`` the scalar (or ``[B]``) confidence weight.
  """
  q = pseudo_label.confidence_weight(conf, cfg.tau, cfg.per_image_q)
  w = pseudo_label.pixel_weights(conf, cfg.tau, cfg.per_image_q)
  loss = cross_entropy(logits, labels, IGNORE_INDEX, pixel_weights=w)
  return cfg.weight * loss, jax.lax.stop_gradient(q)
