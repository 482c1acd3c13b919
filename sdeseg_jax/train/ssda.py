r"""Mode ``ssda``: semi-supervised domain adaptation (IJCV §3.5).

  python -m sdeseg_jax.main --config=configs/ssda_gta.py \
      --config.data_root=/data --workdir=/runs/ssda_gta

Three streams per step (``sdeseg_jax.data.streams``), as the reference:

* ``target``: the labeled target subset (with neighbour frames, ``K`` and
  the pyramid when the multi-task SDE loss is on);
* ``source``: the labeled source dataset with its pseudo-disparity; with
  Matching Geometry Sampling every element carries ``K = 5`` independently
  flipped and cropped candidates (leaves ``[B, K, ...]``);
* ``unlabeled``: the target union (labeled + unlabeled, ``is_labeled``) with
  the target pseudo-disparity.

The loss (paper Eq. 21; all weights 1 by default)::

  L = CE_trg (+ CE_inter for PAD, averaged) (+ L_D on the target frames)
      + CE_src + L_CDM + L_TDM

* MGS runs inside the compiled step: ``G`` for every (union target,
  candidate) pair, ``argmin`` and a gather (``mixing.geometry_match``). The
  chosen source pairs feed both CE_src and the cross-domain mix.
* CDM (the reference's code name ``*_tdm``): source pair ``i`` is
  pasted onto union target ``i`` where the source is closer,
  ``M = [d_src >= d_trg - m]`` with the margin's sign flipped with
  probability 0.5 per pair; mixed labels are source GT / target teacher
  argmax (GT for labeled target images); pixel weights 1 on source pixels,
  ``q_t`` on target pixels. DACS replaces the mask by a ClassMix of
  ``ceil(n/2)`` source classes, ignore 250 included.
* TDM (the reference's code name ``*_cdm``): DepthMix inside the union batch (pairs
  (2k, 2k+1)), teacher probabilities with one-hot GT for labeled images,
  margin 0.03, one ``q`` per batch as the reference (``config.mix``
  settings: ``mix_settings``). CDM and TDM both run
  ``mixing.consistency.consistency_loss``.

Depth scale (``config.ssda.depth_scale``): ``"paper"`` (default) reads raw
SDE sigmoid disparities of both domains; MGS uses ``G`` on
``log(1 + 1/D)`` and the DepthMix masks compare per-image min-max
normalised disparities of the crops. ``"reference"`` reproduces the code:
target values are the exported min-max normalised maps and source values
raw sigmoid outputs, compared as given (where the paper and the code
disagree, this follows the code).

The teacher is the EMA of the student (``config.train.use_ema``), run in
train mode (batch statistics, ASPP dropout) as in the reference, one
forward on the union batch per mix (CDM, then TDM, each with its own dropout
draw), as the reference. The teacher's BatchNorm statistics
(``state.ema_batch_stats``) follow ``config.train.teacher_batch_stats``:
``own`` (reference) threads them through those forwards, so they take one
momentum update per mix, and the loss returns them as the third element of
its aux for the engine to store; ``ema`` / ``student`` derive them from the
student's (``mixing.teacher``). With ``config.ssda.teacher_mode="eval"``
the teacher's forwards leave them unchanged. Evaluation reports the student
(as the reference) with its running statistics and the teacher with
``state.ema_batch_stats``, both in eval mode.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc

from sdeseg_jax.data import resolve
from sdeseg_jax.data import streams as streams_lib
from sdeseg_jax.eval import evaluators as evaluators_lib
from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.mixing import consistency
from sdeseg_jax.mixing import geometry_match
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import mix as mix_lib
from sdeseg_jax.mixing import pseudo_label
from sdeseg_jax.mixing import teacher as teacher_lib
from sdeseg_jax.models import joint
from sdeseg_jax.train import export
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import toolkit
from sdeseg_jax.utils import sharding as sharding_lib

CDM_MODES = ("none", "depthmix", "classmix")
DEPTH_SCALES = ("paper", "reference")

def check_method(sc: mlc.ConfigDict) -> None:
  """Validates ``config.ssda`` (one clear error per wrong key)."""
  if sc.cdm not in CDM_MODES:
    raise ValueError(f"config.ssda.cdm={sc.cdm!r}; choose one of {CDM_MODES}")
  if sc.depth_scale not in DEPTH_SCALES:
    raise ValueError(f"config.ssda.depth_scale={sc.depth_scale!r}; choose "
                     f"one of {DEPTH_SCALES}")
  if sc.cdm != "none" and not sc.source:
    raise ValueError("config.ssda.cdm needs the source stream "
                     "(config.ssda.source=True)")
  if sc.mgs and not sc.source:
    raise ValueError("config.ssda.mgs needs config.ssda.source=True")
  if sc.mgs and sc.num_candidates < 1:
    raise ValueError("config.ssda.num_candidates must be >= 1, got "
                     f"{sc.num_candidates}")


def uses_unlabeled(sc) -> bool:
  return sc.cdm != "none" or sc.tdm or sc.mgs


def _mask_disp(d: jax.Array, depth_scale: str) -> jax.Array:
  """Disparity as compared by the DepthMix masks (module docstring)."""
  d = d.astype(jnp.float32)
  if depth_scale == "paper":
    return masks_lib.normalize_disparity(d)
  return d


def _centre(color: jax.Array, index: int) -> jax.Array:
  """``[B, T, H, W, 3]`` uint8 frames -> centre frame ``[B, H, W, 3]`` float
  (frame ``index``; a one-frame stack is its own centre)."""
  return toolkit.to_float(color[:, index if color.shape[1] > 1 else 0])


def cross_domain_mask(sc, rng: jax.Array, source: dict[str, Any],
                      target: dict[str, Any], num_classes: int
                      ) -> jax.Array:
  """The CDM mask ``[B, H, W]`` (1 = source pixel).

  Args:
    sc: ``config.ssda`` (``cdm``, ``margin``, ``margin_random_flip``,
      ``depth_scale``).
    rng: key of the margin signs (DepthMix) or the class draw (DACS).
    source: chosen source batch: ``pseudo_depth`` [B, H, W], ``label``.
    target: union target batch: ``pseudo_depth`` [B, H, W].
    num_classes: C.

  Returns:
    float32 [B, H, W]. DepthMix: ``[d_src >= d_trg - m]`` with ``m = +-
    margin`` drawn per pair; DACS: ``ceil(n/2)`` of the ``n`` classes of
    each source label map, the ignore value 250 counted as a class.
  """
  if sc.cdm == "depthmix":
    b = source["pseudo_depth"].shape[0]
    margin = (masks_lib.random_margin_sign(rng, b, sc.margin)
              if sc.margin_random_flip else sc.margin)
    return masks_lib.depth_compare_mask(
        _mask_disp(source["pseudo_depth"], sc.depth_scale),
        _mask_disp(target["pseudo_depth"], sc.depth_scale), margin)
  if sc.cdm == "classmix":  # DACS
    return masks_lib.class_mix_mask(source["label"], rng, num_classes,
                                    include_ignore=True, choose="ceil")
  raise ValueError(f"config.ssda.cdm={sc.cdm!r} has no mask")


# The keys of ``config.ssda`` that are ``config.mix`` keys of the shared
# mixing section (``mixing.consistency.mix_config``).
_MIX_KEYS = ("margin", "tau", "augment", "teacher_mode", "jitter_prob",
             "blur_prob", "per_image_q")


def mix_settings(config: mlc.ConfigDict) -> mlc.ConfigDict:
  """The mixing section the TDM and CDM run with.

  ``config.mix`` when the config has one (the section SSL uses), else the
  mixing keys of ``config.ssda`` over ``consistency.mix_config``'s values
  (DepthMix on the pseudo-disparity, one-hot GT for labeled images).
  """
  if "mix" in config:
    cfg = consistency.mix_config(**config.mix.to_dict())
  else:
    cfg = consistency.mix_config(**{k: config.ssda[k] for k in _MIX_KEYS
                                    if k in config.ssda})
  cfg.mask = "depthmix"
  consistency.check_mix_config(
      cfg, teacher_batch_stats=config.train.teacher_batch_stats,
      prefix="config.mix" if "mix" in config else "config.ssda")
  return cfg


class SSDATask:
  """The SSDA task for ``trainer.fit`` (see ``step.Task``)."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.sc = config.ssda
    check_method(self.sc)
    teacher_lib.check_teacher_config(self.sc.teacher_mode,
                                     config.train.teacher_batch_stats,
                                     "config.ssda.teacher_mode")
    self.mix = mix_settings(config)
    self.model = joint.from_config(config.model)
    self.centre = {r: toolkit.centre_index(config.data[r].frame_offsets)
                   for r in ("target", "source", "unlabeled", "val")
                   if r in config.data}
    self.offsets = (tuple(sorted(config.data.target.frame_offsets))
                    if self.sc.multitask else (0,))
    if self.sc.multitask and (
        self.offsets != tuple(sorted(config.loss.frame_offsets)) or
        len(self.offsets) < 2):
      raise ValueError(
          "config.ssda.multitask needs neighbour frames: "
          f"config.data.target.frame_offsets={self.offsets} must equal "
          f"config.loss.frame_offsets={tuple(config.loss.frame_offsets)} "
          "and contain more than the centre frame")

  def target_frames(self, color: jax.Array) -> jax.Array:
    """Labeled-target network input ``[B, T', H, W, 3]`` float (T' = all
    frames with the multi-task SDE loss, else the centre frame)."""
    if self.sc.multitask:
      return toolkit.to_float(color)
    return _centre(color, self.centre["target"])[:, None]

  # -- setup ---------------------------------------------------------------

  def init(self, rng, batch):
    x = self.target_frames(batch["target"]["color"])
    v = self.model.init({"params": rng, "dropout": rng}, x, self.offsets,
                        train=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """ImageNet encoder (``model.encoder_init``), then the SDE run named by
    ``config.init`` (``parts``: encoder, both PAD decoders or the transfer
    head's decoder, pose net); ``toolkit.load_initial_weights``."""
    return toolkit.load_initial_weights(params, batch_stats, self.config)

  # -- pieces of the step --------------------------------------------------

  def _student(self, params, bs, images, offsets, rng):
    return toolkit.student_apply(self.model, params, bs, images, offsets,
                                 rng)

  def select_source(self, source, target_disp):
    """MGS: the candidate of every element with the smallest ``G``.

    Args:
      source: source batch with leaves ``[B, K, ...]``.
      target_disp: ``[B, H, W]`` union-target pseudo-disparity.

    Returns:
      ``(source batch [B, ...], index [B] int32, G [B, K])``.
    """
    crit = "paper" if self.sc.depth_scale == "paper" else "reference"
    cand = {k: v for k, v in source.items() if k not in ("K", "inv_K")}
    return geometry_match.select_matching(
        target_disp, source["pseudo_depth"], cand, crit,
        self.config.loss.min_depth, self.config.loss.max_depth)

  def cdm_inputs(self, src, unl, probs) -> consistency.IntraBatch:
    """The cross-domain mix's ``consistency_loss`` arguments: source pair i
    pasted onto union target i (mask ``cross_domain_mask``), labels source
    GT / target teacher argmax (GT for labeled target images), weights 1 on
    source pixels and ``q_t`` on target pixels."""
    x_s = _centre(src["color"], self.centre["source"])
    x_u = _centre(unl["color"], self.centre["unlabeled"])
    conf_t, y_t = pseudo_label.target_pseudo_labels(
        probs, unl["label"], unl["is_labeled"])

    def mask_fn(rng):
      return cross_domain_mask(self.sc, rng, src, unl,
                               self.config.model.num_classes)

    def target_fn(mask):
      return mix_lib.cross_domain_mix(mask, src["label"], y_t), conf_t

    def weight_fn(mask, conf):
      return pseudo_label.cross_domain_pixel_weights(mask, conf, self.sc.tau)

    return consistency.IntraBatch(x_s, x_u, mask_fn, target_fn, weight_fn)

  def tdm_inputs(self, unl, probs) -> consistency.IntraBatch:
    """The target-domain DepthMix's ``consistency_loss`` arguments: the
    intra-batch mix of ``config.mix`` (pairs (2k, 2k+1), one-hot GT for
    labeled images) on the union batch's pseudo-disparity."""
    x_u = _centre(unl["color"], self.centre["unlabeled"])
    return consistency.intra_batch(
        self.mix, x_u, probs, labels=unl["label"],
        is_labeled=unl["is_labeled"],
        disp=_mask_disp(unl["pseudo_depth"], self.sc.depth_scale))

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    """SSDA loss of one step; see the module docstring.

    Args:
      params, batch_stats: student variables.
      batch: ``{"target", "source", "unlabeled"}`` (the latter two as the
        method needs): ``color`` [B, T, H, W, 3] uint8, ``label`` [B, H, W]
        int32, ``pseudo_depth`` [B, H, W] float32, ``is_labeled`` [B];
        MGS source leaves ``[B, K, ...]``.
      rng: per-step key.
      step: [] int32 (unused; the EMA decay is the engine's).
      teacher: ``(ema_params, ema_batch_stats)`` when a mix is on.

    Returns:
      ``(loss, TaskAux)``; with a mix its ``teacher_batch_stats`` are the
      teacher's statistics after its forwards (one per mix).
    """
    del step
    sc = self.sc
    (k_t, k_s, k_teach, k_cdm_mask, k_cdm_aug, k_cdm_drop, k_tdm_aug,
     k_tdm_drop, k_sde) = jax.random.split(rng, 9)
    bs = batch_stats
    metrics = {}

    # 1. Labeled target: CE (+ PAD intermediate) (+ SDE loss on its frames).
    tgt = batch["target"]
    x_t = self.target_frames(tgt["color"])
    out, bs = self._student(params, bs, x_t, self.offsets, k_t)
    ce_t, _ = toolkit.labeled_seg_loss(out, tgt["label"])
    metrics["ce_target"] = ce_t
    loss = sc.target_weight * ce_t
    if sc.multitask:
      l_d, _ = toolkit.sde_loss(out, tgt, self.offsets, self.config.loss,
                                k_sde)
      metrics["sde_loss"] = l_d
      loss = loss + sc.depth_weight * l_d

    unl = batch.get("unlabeled")
    # 2. Source: MGS choice, CE.
    src = None
    if sc.source:
      src = batch["source"]
      if sc.mgs:
        src, idx, dist = self.select_source(src, unl["pseudo_depth"])
        metrics["mgs_g_chosen"] = jnp.mean(jnp.min(dist, axis=1))
        metrics["mgs_g_mean"] = jnp.mean(dist)
        metrics["mgs_index_mean"] = jnp.mean(idx.astype(jnp.float32))
      x_s = _centre(src["color"], self.centre["source"])
      out_s, bs = self._student(params, bs, x_s[:, None], (0,), k_s)
      ce_s = cross_entropy(out_s["semantics"], src["label"])
      metrics["ce_source"] = ce_s
      loss = loss + sc.source_weight * ce_s

    if sc.cdm != "none" or sc.tdm:
      if teacher is None:
        raise ValueError("config.ssda mixing needs the mean teacher: set "
                         "config.train.use_ema=True")
      x_u = _centre(unl["color"], self.centre["unlabeled"])
      t_params, t_bs = teacher

    def student(drop_rng):
      def fn(x_mix):
        out_m, new_bs = self._student(params, bs, x_mix[:, None], (0,),
                                      drop_rng)
        return out_m["semantics"], new_bs
      return fn

    # 3. Cross-domain mix (source -> union target).
    if sc.cdm != "none":
      probs, t_bs = teacher_lib.teacher_probs(
          self.model, (t_params, t_bs), x_u, k_teach, sc.teacher_mode)
      l_cdm, mixed, bs = consistency.consistency_loss(
          self.mix, *self.cdm_inputs(src, unl, probs),
          student_fn=student(k_cdm_drop), mask_rng=k_cdm_mask,
          aug_rng=k_cdm_aug)
      metrics.update(
          cdm_loss=l_cdm,
          cdm_q_target=pseudo_label.confidence_weight(mixed.conf, sc.tau),
          cdm_source_fraction=jnp.mean(mixed.mask))
      loss = loss + sc.cdm_weight * l_cdm

    # 4. Target-domain DepthMix inside the union batch.
    if sc.tdm:
      # The reference's second teacher forward: another dropout draw and
      # another update of the teacher's running statistics.
      probs, t_bs = teacher_lib.teacher_probs(
          self.model, (t_params, t_bs), x_u,
          jax.random.fold_in(k_teach, 1), sc.teacher_mode)
      l_tdm, mixed, bs = consistency.consistency_loss(
          self.mix, *self.tdm_inputs(unl, probs),
          student_fn=student(k_tdm_drop),
          mask_rng=jax.random.fold_in(k_tdm_aug, 1), aug_rng=k_tdm_aug)
      metrics.update(tdm_loss=l_tdm, tdm_q=jnp.mean(mixed.weight))
      loss = loss + sc.tdm_weight * l_tdm
    if sc.cdm != "none" or sc.tdm:
      return loss, step_lib.TaskAux(bs, metrics, t_bs)
    return loss, step_lib.TaskAux(bs, metrics)

  def predict(self, variables, batch):
    """Eval-mode ``{"logits": [B, H, W, C]}`` of the centre frame of the
    val stream's ``batch["color"]`` [B, T, H, W, 3], with ``"disp"`` for
    nets with a depth head (``toolkit.predictions``)."""
    x = _centre(batch["color"], self.centre["val"])[:, None]
    out = self.model.apply(variables, x, (0,), train=False, pose=False)
    return toolkit.predictions(out)


# -- data -------------------------------------------------------------------


def resolve_streams(config: mlc.ConfigDict) -> dict[str, Any]:
  """Streams of the run with paths filled in from ``config.data_root``.

  ``resolve.data_root_streams`` fills and checks the dataset folders (all at
  once); then every pseudo-depth folder is checked file by file.

  Returns:
    ``{role: stream config}`` for the roles the method needs plus ``val``.

  Raises:
    FileNotFoundError: naming the dataset, its layout and the folder.
  """
  sc = config.ssda
  roles = ["target", "val"]
  if sc.source:
    roles.append("source")
  if uses_unlabeled(sc):
    roles.append("unlabeled")
  out = resolve.data_root_streams(config, roles,
                                  depth_roles=("source", "unlabeled"))
  for role, s in out.items():
    if s.pseudo_depth_dir:
      # Every image has its file, in the format this run reads; the error
      # names the missing file and the export command that writes it.
      export.check_pseudo_depth(
          s, role=role, depth_scale=sc.depth_scale,
          normalize=sc.depth_scale == "reference" and role == "unlabeled")
  return out


def make_train_stream(config, streams, data_dir: str
                      ) -> streams_lib.NamedIterators:
  """``{"target", "source", "unlabeled"}`` batches (as the method needs);
  with MGS the source leaves are ``[B, num_candidates, ...]``."""
  sc = config.ssda
  names = [r for r in ("target", "source", "unlabeled") if r in streams]
  sizes = {"target": sc.batch_target, "source": sc.batch_source,
           "unlabeled": sc.batch_unlabeled}
  cand = {"source": sc.num_candidates} if sc.mgs else {}
  return streams_lib.NamedIterators(**streams_lib.make_stream_loaders(
      {n: streams[n] for n in names}, {n: sizes[n] for n in names},
      seed=config.seed, data_dir=data_dir, candidates=cand))


def example_batch(config: mlc.ConfigDict) -> dict[str, Any]:
  """ShapeDtypeStructs of what ``SSDATask.init`` reads."""
  return toolkit.example_batch(config.data.target, config.ssda.batch_target,
                               key="color", role="target")


# -- evaluation -------------------------------------------------------------

EVALUATOR = "segmentation"


def make_evaluators(task: SSDATask, config: mlc.ConfigDict, mesh, stream,
                    data_dir: str, workdir: str):
  """The target-val segmentation evaluator: student and teacher mIoU,
  ``config.eval.class_subsets`` (Synthia's 16/13 classes), ``miou_rel``
  (``config.eval.fully_supervised_miou``, the papers' relative column)."""
  ec = config.eval
  return [evaluators_lib.SegmentationEvaluator(
      task.predict, lambda: toolkit.eval_batches(stream, config, data_dir),
      mesh=mesh, workdir=workdir, name=EVALUATOR,
      num_classes=config.model.num_classes, offsets=stream.frame_offsets,
      class_subsets=tuple(ec.class_subsets),
      fully_supervised_miou=ec.fully_supervised_miou,
      relative_to=ec.relative_to, table_classes=tuple(ec.table_classes))]


def resolve_init(config: mlc.ConfigDict) -> mlc.ConfigDict:
  """``config.init.checkpoint == "auto"`` -> ``<data_root>/<folders.sde>``.

  Raises:
    FileNotFoundError: the SDE run folder does not exist.
  """
  if config.init.checkpoint != "auto":
    return config
  path = os.path.join(config.data_root, config.folders.sde)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"config.init.checkpoint='auto' -> {path!r} does not exist: expected "
        "the workdir of the Cityscapes SDE run (mode=sde, "
        "configs/sde_cityscapes.py) whose encoder, decoders and pose net "
        "initialise the multi-task net; set --config.init.checkpoint")
  config = mlc.ConfigDict(config.to_dict())
  config.init.checkpoint = path
  return config


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Entry point of ``mode=ssda``.

  Returns:
    The final evaluation (the evaluator record's numbers: ``miou``,
    ``miou_teacher``, subsets, ...) and ``step``, the step reached (below
    ``config.train.num_steps`` when the run was preempted).
  """
  check_method(config.ssda)
  streams = resolve_streams(config)
  config = resolve_init(config)
  mesh = sharding_lib.make_mesh()
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  task = SSDATask(config)
  train_iter = make_train_stream(config, streams, data_dir)
  evaluators = make_evaluators(task, config, mesh, streams["val"], data_dir,
                               workdir)
  state = toolkit.run(config, workdir, task=task, train_iter=train_iter,
                      example_batch=example_batch(config), mesh=mesh,
                      evaluators=evaluators if config.eval.split else ())
  step = int(jax.device_get(state.step))
  result = {}
  if config.eval.split and step >= config.train.num_steps:
    # fit evaluates at the last step when eval_every > 0; reuse that.
    rec = evaluators[0].latest
    if rec is None or rec["step"] != step:
      evaluators[0].evaluate(toolkit.models_to_evaluate(state), step)
      rec = evaluators[0].latest
    result = {k: v for k, v in rec.items()
              if isinstance(v, (int, float)) and k != "step"}
  result["step"] = step
  logging.info("final evaluation: %s", result)
  return result


def mix_examples(task: SSDATask, batch: dict[str, Any],
                 rng: jax.Array | None = None) -> dict[str, Any]:
  """The CDM and TDM of one training batch, for the report's panels.

  Runs the step's own code (``select_source``, ``cdm_inputs``,
  ``tdm_inputs``, ``consistency.mixed_batch``) with uniform stand-in teacher
  probabilities (the images and masks do not depend on them).

  Args:
    task: the task.
    batch: a ``make_train_stream`` batch with ``source`` and ``unlabeled``.
    rng: key of the mask and augmentation draws (default ``PRNGKey(0)``).

  Returns:
    numpy ``target``/``source`` images [B, H, W, 3] float, the cross-domain
    mix ``cdm`` and mask ``cdm_mask``, the target-domain mix ``tdm`` and
    mask ``tdm_mask``, and the MGS choice ``mgs_index`` [B] (or None).
  """
  rng = jax.random.PRNGKey(0) if rng is None else rng
  c = task.config.model.num_classes

  def examples(unl, src, rng):
    idx = None
    if task.sc.mgs:
      src, idx, _ = task.select_source(src, unl["pseudo_depth"])
    probs = jnp.full(unl["label"].shape + (c,), 1.0 / c, jnp.float32)
    k_cdm, k_tdm, k_aug = jax.random.split(rng, 3)
    cdm = consistency.mixed_batch(task.mix, *task.cdm_inputs(src, unl, probs),
                                  mask_rng=k_cdm, aug_rng=k_aug)
    tdm = consistency.mixed_batch(task.mix, *task.tdm_inputs(unl, probs),
                                  mask_rng=k_tdm, aug_rng=k_aug)
    return dict(target=_centre(unl["color"], task.centre["unlabeled"]),
                source=_centre(src["color"], task.centre["source"]),
                cdm=cdm.image, cdm_mask=cdm.mask, tdm=tdm.image,
                tdm_mask=tdm.mask, mgs_index=idx)

  keys = ("color", "pseudo_depth", "label", "is_labeled")
  unl = {k: batch["unlabeled"][k] for k in keys}
  src = {k: batch["source"][k] for k in ("color", "pseudo_depth", "label")}
  return jax.device_get(jax.jit(examples)(unl, src, rng))
