"""Segmentation pieces shared by the SSL and SSDA modes.

Everything here is pure and runs inside the jitted step (except the
host-side weight initialisation and the ``NamedIterators`` data helper):

* ``labeled_seg_loss``: the supervised CE; with PAD the mean of the final and
  the (upsampled) intermediate CE (REFERENCE_SPEC §4.3).
* ``teacher_probs``: mean-teacher softmax, either as the reference runs it
  (train mode: batch statistics of the unlabeled batch and ASPP dropout,
  §4.4; the teacher's own running statistics are updated and returned) or
  in inference mode (running statistics, no dropout, none updated).
* ``check_teacher_config``: which teacher mode goes with which source of the
  teacher's BatchNorm statistics (``config.train.teacher_batch_stats``).
* ``mix_depth``: the normalised disparity DepthMix compares (exported pseudo
  depth, the student's own online disparity, or ground-truth depth).
* ``mix_mask``: DepthMix / ClassMix / CutMix / all-ones masks from a config.
* ``mix_batch``: mixes images, pseudo labels and confidences of a batch with
  its partner images using one mask (§4.5), optionally with ground truth for
  labeled images (``mix_use_gt``).
* ``pseudo_label_loss``: ``q * CE`` with the reference's denominators.
* ``strong_augment``: kornia 0.4.0 / standard jitter + blur, or none.
* ``init_from_sde``: copies an SDE run's encoder, depth decoder and pose net
  into a segmentation net (both PAD decoders, or the transfer head's own
  decoder, from the SDE depth decoder, §2.4-2.5).

The ``config.mix`` section (``mix_config``) parametrises the mixing.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.mixing import augment
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import mix as mix_lib
from sdeseg_jax.mixing import pseudo_label
from sdeseg_jax.mixing import teacher as teacher_lib
from sdeseg_jax.train import checkpoint as ckpt_lib

from sdeseg_jax.constants import IGNORE_INDEX
MASKS = ("depthmix", "classmix", "cutmix", "none")
DEPTH_SOURCES = ("pseudo", "online", "gt")
TEACHER_MODES = ("train", "eval")
AUGMENTS = ("kornia04", "standard", "none")


def mix_config(**overrides) -> mlc.ConfigDict:
  """The ``config.mix`` section: pseudo labels, mixing, strong augmentation.

  Keys:
    mask: depthmix | classmix | cutmix | none (pseudo labels only, M = 1).
    depth_source: where DepthMix takes its depth: ``pseudo``
      (``batch["pseudo_depth"]``, exported normalised pseudo-disparity, 210 /
      SSDA), ``online`` (the student's disparity of the unmixed batch,
      ``depthmix_online_depth`` of 212) or ``gt`` (``batch["depth"]``,
      metres; an oracle for analysis).
    margin: DepthMix margin in normalised-disparity units (0.03).
    foreground_threshold: ``depthcomp_foreground_threshold`` (0).
    use_gt: ``mix_use_gt``: labeled images of the unlabeled stream use their
      one-hot ground truth instead of the teacher's softmax.
    tau: confidence threshold of q (0.968).
    per_image_q: paper Eq. 11 (one q per image with ">") instead of the
      reference's one q per batch with ">=".
    weight: ``consistency_weight`` of the mixed loss (1).
    teacher_mode: ``train`` (reference: batch statistics + dropout) or
      ``eval`` (running statistics, no dropout; needs
      ``config.train.teacher_batch_stats`` ``ema`` or ``student``).
    augment: kornia04 (reference) | standard | none.
    jitter_prob, blur_prob: gates of the strong augmentation (0.8, 0.5).
    cutmix_area: box area of CutMix (0.5).
  """
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


def check_teacher_config(teacher_mode: str, teacher_batch_stats: str,
                         mode_key: str = "config.mix.teacher_mode") -> None:
  """Raises ValueError unless the teacher mode and statistics source fit.

  Args:
    teacher_mode: ``train`` or ``eval`` (read from ``mode_key``).
    teacher_batch_stats: ``config.train.teacher_batch_stats``, one of
      ``mixing.teacher.BATCH_STATS_SOURCES``.
    mode_key: the config key of ``teacher_mode``, for the message.
  """
  if teacher_mode not in TEACHER_MODES:
    raise ValueError(f"{mode_key}={teacher_mode!r}; choose one of "
                     f"{TEACHER_MODES}")
  if teacher_batch_stats not in teacher_lib.BATCH_STATS_SOURCES:
    raise ValueError(
        f"config.train.teacher_batch_stats={teacher_batch_stats!r}; choose "
        f"one of {teacher_lib.BATCH_STATS_SOURCES}")
  if teacher_mode == "eval" and teacher_batch_stats == "own":
    raise ValueError(
        f"{mode_key}='eval' runs the teacher on its running BatchNorm "
        "statistics, and an inference-mode teacher never updates its own: "
        "with config.train.teacher_batch_stats='own' they would stay at "
        "their initial values. Set config.train.teacher_batch_stats to "
        "'ema' (averaged student statistics) or 'student'")


def check_mix_config(cfg: mlc.ConfigDict, *, teacher_batch_stats: str
                     ) -> None:
  """Raises ValueError naming the ``config.mix`` key that is invalid.

  Args:
    cfg: ``config.mix``.
    teacher_batch_stats: ``config.train.teacher_batch_stats``.
  """
  for key, allowed in (("mask", MASKS), ("depth_source", DEPTH_SOURCES),
                       ("teacher_mode", TEACHER_MODES),
                       ("augment", AUGMENTS)):
    if cfg[key] not in allowed:
      raise ValueError(f"config.mix.{key}={cfg[key]!r}; choose one of "
                       f"{allowed}")
  check_teacher_config(cfg.teacher_mode, teacher_batch_stats)


def centre(frames: jax.Array, offsets) -> jax.Array:
  """``[B, T, H, W, C]`` -> the centre frame ``[B, H, W, C]``."""
  return frames[:, tuple(offsets).index(0)]


def labeled_seg_loss(out: Mapping[str, Any], labels: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Supervised CE of a network output (ignore 250).

  Args:
    out: network outputs with ``semantics`` ``[B, H, W, C]`` and, for PAD,
      ``intermediate_semantics`` ``[B, H/4, W/4, C]`` (upsampled inside
      ``cross_entropy`` with align_corners=True, as the reference).
    labels: ``[B, H, W]`` int train ids.

  Returns:
    ``(loss, metrics)``: the CE of the final logits, or the mean of the final
    and intermediate CE (§4.3); metrics ``ce`` / ``ce_intermediate``.
  """
  ce = cross_entropy(out["semantics"], labels, IGNORE_INDEX)
  metrics = {"ce": ce}
  if "intermediate_semantics" in out:
    ce_i = cross_entropy(out["intermediate_semantics"], labels, IGNORE_INDEX)
    metrics["ce_intermediate"] = ce_i
    return 0.5 * (ce + ce_i), metrics
  return ce, metrics


def teacher_probs(model, teacher: tuple[Any, Any], images: jax.Array,
                  rng: jax.Array, mode: str) -> tuple[jax.Array, Any]:
  """Mean-teacher class probabilities of single frames (stop-gradient).

  Args:
    model: the flax segmentation net (``SegDepthNet``).
    teacher: ``(ema_params, ema_batch_stats)``.
    images: ``[B, H, W, 3]`` float in [0, 1].
    rng: dropout key (train mode).
    mode: ``"train"``: as the reference, BatchNorm normalises with the
      statistics of this batch and ASPP dropout is active; the teacher's
      running statistics take one momentum update from this batch (the
      reference's teacher is a module of its own in train mode, §4.4).
      ``"eval"``: running statistics, no dropout, statistics unchanged.

  Returns:
    ``(probs, batch_stats)``: ``[B, H, W, C]`` float32 softmax and the
    teacher's BatchNorm statistics after this forward (the pose net's, which
    the teacher never runs, unchanged).
  """
  params, batch_stats = teacher
  variables = {"params": params, "batch_stats": batch_stats}
  x = images[:, None]
  if mode == "train":
    out, new = model.apply(variables, x, (0,), train=True, pose=False,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
    batch_stats = new["batch_stats"]
  elif mode == "eval":
    out = model.apply(variables, x, (0,), train=False, pose=False)
  else:
    raise ValueError(f"teacher mode must be one of {TEACHER_MODES}, got "
                     f"{mode!r}")
  probs = jax.nn.softmax(out["semantics"].astype(jnp.float32), axis=-1)
  return jax.lax.stop_gradient((probs, batch_stats))


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
      normalised per image, unquantised, §4.5.2) or ``gt``
      (``batch["depth"]`` in metres -> disparity -> min-max normalised).
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
  """The mixing mask of ``config.mix.mask``, ``[B, H, W]`` float32.

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


def mix_batch(cfg: mlc.ConfigDict, rng: jax.Array, images: jax.Array,
              probs: jax.Array, *, labels: jax.Array | None = None,
              is_labeled: jax.Array | None = None,
              disp: jax.Array | None = None) -> dict[str, jax.Array]:
  """Mixes every image with its partner and the targets with the same mask.

  Args:
    cfg: ``config.mix``.
    rng: key for the mask.
    images: ``[B, H, W, 3]`` float (B even).
    probs: ``[B, H, W, C]`` teacher softmax.
    labels, is_labeled: GT ``[B, H, W]`` and ``[B]`` of the unlabeled stream
      (used when ``cfg.use_gt``; labeled pixels then have confidence 1 and
      labeled-ignore pixels confidence 0 and label 250, §4.5.1).
    disp: ``[B, H, W]`` normalised disparity (DepthMix).

  Returns:
    ``{"image": [B, H, W, 3], "conf": [B, H, W], "label": [B, H, W] int32,
    "mask": [B, H, W]}``.
  """
  b = images.shape[0]
  partner = masks_lib.pair_partner_index(b)
  use_gt = cfg.use_gt and labels is not None and is_labeled is not None
  if use_gt:
    target_probs = mix_lib.probs_with_ground_truth(probs, labels, is_labeled)
  else:
    target_probs = probs.astype(jnp.float32)
  class_labels = jnp.argmax(target_probs, axis=-1).astype(jnp.int32)
  mask = mix_mask(cfg, rng, images.shape[:3], class_labels=class_labels,
                  disp=disp, num_classes=probs.shape[-1])
  mask = jax.lax.stop_gradient(mask)
  mixed = mix_lib.mix_with_partner(mask, images, partner)
  conf, plabel = mix_lib.mix_teacher_targets(
      mask, probs, partner, labels if use_gt else None,
      is_labeled if use_gt else None)
  return {"image": mixed, "conf": conf, "label": plabel, "mask": mask}


def strong_augment(cfg: mlc.ConfigDict, rng: jax.Array,
                   images: jax.Array) -> jax.Array:
  """Colour jitter + blur of ``config.mix.augment`` (``none``: identity)."""
  if cfg.augment == "none":
    return images.astype(jnp.float32)
  return augment.strong_augment(rng, images, mode=cfg.augment,
                                jitter_prob=cfg.jitter_prob,
                                blur_prob=cfg.blur_prob)


def pseudo_label_loss(cfg: mlc.ConfigDict, logits: jax.Array,
                      conf: jax.Array, labels: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """``weight * mean_{B*H*W}(q * CE)`` of the mixed batch (§4.5.7).

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


# ---------------------------------------------------------------------------
# Host side: initialisation from an SDE run, several named data iterators.
# ---------------------------------------------------------------------------


def sde_init_mapping(seg_head: str, *, depth: bool, pose: bool,
                     parts=("encoder", "decoders", "pose")
                     ) -> list[tuple[str, str, str | None]]:
  """``(source prefix, target prefix, excluded regex)`` per copied part.

  SDE checkpoints (``SDENet``) have ``encoder``, ``depth`` (with
  ``dispconv_*``) and ``pose``. Targets: PAD -> both ``pad/depth_dec`` and
  ``pad/seg_dec`` (the latter without ``dispconv``, as the reference
  replaces them by Identity after loading, §2.5); transfer -> the head's own
  ``seg_head/unet_dec`` (without ``dispconv``, §2.4) and ``depth`` when the
  net has a depth decoder.

  Args:
    seg_head: ``pad``, ``transfer`` or ``transfer_student``.
    depth: the segmentation net has a (transfer-mode) depth decoder.
    pose: the segmentation net has a pose net.
    parts: subset of ``("encoder", "decoders", "pose")`` to copy.

  Returns:
    The mapping list.
  """
  unknown = set(parts) - {"encoder", "decoders", "pose"}
  if unknown:
    raise ValueError(f"config.init.parts: unknown {sorted(unknown)}; choose "
                     "from encoder, decoders, pose")
  m = []
  if "encoder" in parts:
    m.append(("encoder", "encoder", None))
  if "decoders" in parts:
    if seg_head == "pad":
      m.append(("depth", "pad/depth_dec", None))
      m.append(("depth", "pad/seg_dec", r"dispconv_\d+/.*"))
    else:
      m.append(("depth", "seg_head/unet_dec", r"dispconv_\d+/.*"))
      if depth:
        m.append(("depth", "depth", None))
  if "pose" in parts and pose:
    m.append(("pose", "pose", None))
  return m


def copy_variables(variables: dict[str, Any], source: dict[str, Any],
                   mapping, what: str) -> dict[str, Any]:
  """Copies ``source`` variables into ``variables`` along ``mapping``.

  Args:
    variables: ``{"params", "batch_stats"}`` numpy trees of the new net.
    source: the same collections of the earlier run.
    mapping: ``sde_init_mapping`` output.
    what: name of the source for error messages.

  Returns:
    The updated trees.

  Raises:
    ValueError: a target is missing or a shape differs, or a mapping entry
      copies nothing.
  """
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  counts = {}
  for src, dst, exclude in mapping:
    n = 0
    for col in ("params", "batch_stats"):
      tree = source.get(col) or {}
      for path, value in flax.traverse_util.flatten_dict(
          tree, sep="/").items():
        if not path.startswith(src + "/"):
          continue
        rest = path[len(src) + 1:]
        if exclude and re.fullmatch(exclude, rest):
          continue
        key = f"{col}/{dst}/{rest}"
        if key not in flat or np.shape(flat[key]) != np.shape(value):
          raise ValueError(
              f"config.init: {col}/{path} of {what} {np.shape(value)} does "
              f"not fit {key} "
              f"({np.shape(flat[key]) if key in flat else 'absent'}); the "
              "SDE run must use the same encoder depth/width and decoder")
        flat[key] = np.asarray(value, np.asarray(flat[key]).dtype)
        n += 1
    if not n:
      raise ValueError(f"config.init: {what} has no variables under "
                       f"{src!r} (needed for {dst!r})")
    counts[f"{src}->{dst}"] = n
  logging.info("init from %s: %s", what, counts)
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def init_from_sde(variables: dict[str, Any], init_cfg: mlc.ConfigDict,
                  model_cfg: mlc.ConfigDict) -> dict[str, Any]:
  """Initialises a segmentation net from an SDE run's checkpoint.

  Args:
    variables: ``{"params", "batch_stats"}`` numpy trees of the new net.
    init_cfg: ``config.init`` with ``checkpoint`` (the SDE workdir; "" = no
      SDE init, ImageNet only), ``step`` (-1 latest) and ``parts``.
    model_cfg: ``config.model`` (``seg_head``, ``depth``, ``pose``).

  Returns:
    The updated variables.
  """
  if not init_cfg.checkpoint:
    return variables
  prev = ckpt_lib.load_variables(
      init_cfg.checkpoint, None if init_cfg.step < 0 else init_cfg.step)
  mapping = sde_init_mapping(model_cfg.seg_head, depth=model_cfg.depth,
                             pose=model_cfg.pose, parts=tuple(init_cfg.parts))
  return copy_variables(variables, prev, mapping,
                        f"{init_cfg.checkpoint} step {prev['step']}")


class NamedIterators:
  """Several data iterators behind one, checkpointed together.

  ``next()`` returns ``{name: next(iterator)}``. ``get_state``/``set_state``
  (JSON bytes of ``{name: state}``) follow grain's protocol for
  non-``DatasetIterator`` items, so ``trainer.fit`` checkpoints and restores
  every stream's position with ``grain.checkpoint.CheckpointSave``.

  Args:
    **iterators: name -> a ``pipeline.Loader`` or anything with
      ``get_state``/``set_state`` (dict states).
  """

  def __init__(self, **iterators):
    if not iterators:
      raise ValueError("NamedIterators needs at least one iterator")
    self.iterators = iterators

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    return {k: next(v) for k, v in self.iterators.items()}

  def get_state(self) -> bytes:
    return json.dumps({k: v.get_state() for k, v in self.iterators.items()},
                      sort_keys=True).encode()

  def set_state(self, state: bytes | str | dict) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    missing = set(self.iterators) - set(state)
    if missing:
      raise ValueError(f"iterator checkpoint lacks streams {sorted(missing)}"
                       f" (has {sorted(state)})")
    for k, v in self.iterators.items():
      v.set_state(state[k])

  def start_prefetch(self) -> None:
    """Called by grain after a restore; the loaders prefetch on demand."""

  def close(self) -> None:
    for v in self.iterators.values():
      close = getattr(v, "close", None)
      if close is not None:
        close()
