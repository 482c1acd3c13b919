r"""Mode ``ssda``: semi-supervised domain adaptation (IJCV §3.5; spec §5).

  python -m sdeseg_jax.main --config=configs/ssda_gta.py \
      --config.data_root=/data --workdir=/runs/ssda_gta

Three streams per step (``sdeseg_jax.data.streams``; §5.1):

* ``target``: the labeled target subset (with neighbour frames, ``K`` and
  the pyramid when the multi-task SDE loss is on);
* ``source``: the labeled source dataset with its pseudo-disparity; with
  Matching Geometry Sampling every element carries ``K = 5`` independently
  flipped and cropped candidates (leaves ``[B, K, ...]``);
* ``unlabeled``: the target union (labeled + unlabeled, ``is_labeled``) with
  the target pseudo-disparity.

The loss (§5.2, paper Eq. 21; all weights 1 by default)::

  L = CE_trg (+ CE_inter for PAD, averaged) (+ L_D on the target frames)
      + CE_src + L_CDM + L_TDM

* MGS (§5.4) runs inside the compiled step: ``G`` for every (union target,
  candidate) pair, ``argmin`` and a gather (``mixing.geometry_match``). The
  chosen source pairs feed both CE_src and the cross-domain mix.
* CDM (§5.3; the reference's code name ``*_tdm``): source pair ``i`` is
  pasted onto union target ``i`` where the source is closer,
  ``M = [d_src >= d_trg - m]`` with the margin's sign flipped with
  probability 0.5 per pair; mixed labels are source GT / target teacher
  argmax (GT for labeled target images); pixel weights 1 on source pixels,
  ``q_t`` on target pixels. DACS replaces the mask by a ClassMix of
  ``ceil(n/2)`` source classes, ignore 250 included.
* TDM (§5.6; code name ``*_cdm``): DepthMix inside the union batch (pairs
  (2k, 2k+1)), teacher probabilities with one-hot GT for labeled images,
  fixed margin 0.03, one ``q`` per batch (§4.5).

Depth scale (``config.ssda.depth_scale``): ``"paper"`` (default) reads raw
SDE sigmoid disparities of both domains; MGS uses ``G`` on
``log(1 + 1/D)`` and the DepthMix masks compare per-image min-max
normalised disparities of the crops. ``"reference"`` reproduces the code:
target values are the exported min-max normalised maps and source values
raw sigmoid outputs, compared as given (§5.4 [PAPER≠CODE]).

The teacher is the EMA of the student (``config.train.use_ema``), run in
train mode (batch statistics, ASPP dropout) as in the reference (§4.4), one
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

import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax.data import streams as streams_lib
from sdeseg_jax.eval import segmentation as seg_eval
from sdeseg_jax.eval import tables
from sdeseg_jax.losses.monodepth import monodepth_loss
from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.mixing import augment
from sdeseg_jax.mixing import geometry_match
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import mix as mix_lib
from sdeseg_jax.mixing import pseudo_label
from sdeseg_jax.models import joint
from sdeseg_jax.models import pretrained
from sdeseg_jax.train import sde
from sdeseg_jax.train import seg
from sdeseg_jax.train import export
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding as sharding_lib

CDM_MODES = ("none", "depthmix", "classmix")
DEPTH_SCALES = ("paper", "reference")

# Sub-folders that identify each layout (one of each tuple must exist).
_LAYOUT_FOLDERS = {
    "cityscapes": (("leftImg8bit", "leftImg8bit_small"), ("gtFine",)),
    "gta5": (("images", "images_small"), ("labels",)),
    "synthia": (("RGB", "RGB_small"), ("synthia_mapped_to_cityscapes",)),
    "camvid": (("train",), ("trainannot",)),
}
_ROLE_NAMES = {"target": "target dataset (labeled subset)",
               "unlabeled": "target dataset (union)",
               "source": "source dataset", "val": "target validation data"}


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


def centre_index(stream) -> int:
  """Position of offset 0 among a stream's sorted frame offsets."""
  return tuple(sorted(stream.frame_offsets)).index(0)


def _centre(color: jax.Array, index: int) -> jax.Array:
  """``[B, T, H, W, 3]`` uint8 frames -> centre frame ``[B, H, W, 3]`` float.

  Streams may carry neighbour frames they do not need (e.g. when they share
  a prepared dataset with the SDE stream); only the centre frame is used.
  """
  return sde.to_float(color[:, index])


def cross_domain_mask(sc, rng: jax.Array, source: dict[str, Any],
                      target: dict[str, Any], num_classes: int
                      ) -> jax.Array:
  """The CDM mask ``[B, H, W]`` (1 = source pixel), §5.3.

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


class SSDATask:
  """The SSDA task for ``trainer.fit`` (see ``step.Task``)."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.sc = config.ssda
    check_method(self.sc)
    seg.check_teacher_config(self.sc.teacher_mode,
                             config.train.teacher_batch_stats,
                             "config.ssda.teacher_mode")
    self.model = joint.from_config(config.model)
    self.centre = {r: centre_index(config.data[r])
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
      return sde.to_float(color)
    return _centre(color, self.centre["target"])[:, None]

  # -- setup ---------------------------------------------------------------

  def init(self, rng, batch):
    x = self.target_frames(batch["target"]["color"])
    v = self.model.init({"params": rng, "dropout": rng}, x, self.offsets,
                        train=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """ImageNet encoder (``model.encoder_init``), then the SDE run named by
    ``config.init`` (``seg.init_from_sde``: encoder, both PAD decoders or
    the transfer head's decoder, pose net)."""
    mc = self.config.model
    variables = {"params": params, "batch_stats": batch_stats}
    if mc.encoder_init:
      variables = pretrained.merge_variables(
          variables, pretrained.load_npz(mc.encoder_init), at=("encoder",))
    if mc.pose_encoder_init and "pose" in params:
      variables = pretrained.merge_variables(
          variables, pretrained.load_npz(mc.pose_encoder_init),
          at=("pose", "encoder"))
    variables = seg.init_from_sde(jax.device_get(variables),
                                  self.config.init, mc)
    return variables["params"], variables["batch_stats"]

  # -- pieces of the step --------------------------------------------------

  def _student(self, params, bs, images, offsets, rng):
    out, new = self.model.apply(
        {"params": params, "batch_stats": bs}, images, offsets, train=True,
        rngs={"dropout": rng}, mutable=["batch_stats"],
        pose=len(offsets) > 1)
    return out, new["batch_stats"]

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
      ``(loss, (new_batch_stats, metrics))``; with a mix
      ``(loss, (new_batch_stats, metrics, teacher_batch_stats))``, the
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
    ce_t, _ = seg.labeled_seg_loss(out, tgt["label"])
    metrics["ce_target"] = ce_t
    loss = sc.target_weight * ce_t
    if sc.multitask:
      lc = self.config.loss
      disps = {s: out["disp"][s].astype(jnp.float32) for s in lc.scales}
      pyr = {s: sde.to_float(tgt["pyramid"][f"s{s}"])
             for s in lc.scales if s > 0}
      l_d, _ = monodepth_loss(disps, x_t, pyr,
                              sde.cam_T_cam(out, self.offsets), tgt["K"],
                              tgt["inv_K"], k_sde, lc)
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

    # 3. Cross-domain mix (source -> union target).
    if sc.cdm != "none":
      probs, t_bs = seg.teacher_probs(self.model, (t_params, t_bs), x_u,
                                      k_teach, sc.teacher_mode)
      conf_t, y_t = pseudo_label.target_pseudo_labels(
          probs, unl["label"], unl["is_labeled"])
      mask = cross_domain_mask(sc, k_cdm_mask, src, unl,
                               self.config.model.num_classes)
      mixed = mix_lib.cross_domain_mix(mask, {"x": x_s, "y": src["label"]},
                                       {"x": x_u, "y": y_t})
      w = pseudo_label.cross_domain_pixel_weights(mask, conf_t, sc.tau)
      x_m = augment.strong_augment(k_cdm_aug, mixed["x"], sc.augment)
      out_m, bs = self._student(params, bs, x_m[:, None], (0,), k_cdm_drop)
      l_cdm = cross_entropy(out_m["semantics"], mixed["y"], pixel_weights=w)
      metrics.update(
          cdm_loss=l_cdm,
          cdm_q_target=pseudo_label.confidence_weight(conf_t, sc.tau),
          cdm_source_fraction=jnp.mean(mask))
      loss = loss + sc.cdm_weight * l_cdm

    # 4. Target-domain DepthMix inside the union batch.
    if sc.tdm:
      # The reference's second teacher forward: another dropout draw and
      # another update of the teacher's running statistics.
      probs, t_bs = seg.teacher_probs(
          self.model, (t_params, t_bs), x_u,
          jax.random.fold_in(k_teach, 1), sc.teacher_mode)
      partner = masks_lib.pair_partner_index(x_u.shape[0])
      d_u = _mask_disp(unl["pseudo_depth"], sc.depth_scale)
      mask = masks_lib.depth_mix_mask(d_u, partner, sc.margin)
      conf, y = mix_lib.mix_teacher_targets(
          mask, probs, partner, unl["label"], unl["is_labeled"])
      x_m = augment.strong_augment(
          k_tdm_aug, mix_lib.mix_with_partner(mask, x_u, partner),
          sc.augment)
      q = pseudo_label.pixel_weights(conf, sc.tau)
      out_m, bs = self._student(params, bs, x_m[:, None], (0,), k_tdm_drop)
      l_tdm = cross_entropy(out_m["semantics"], y, pixel_weights=q)
      metrics.update(tdm_loss=l_tdm, tdm_q=jnp.mean(q))
      loss = loss + sc.tdm_weight * l_tdm
    if sc.cdm != "none" or sc.tdm:
      return loss, (bs, metrics, t_bs)
    return loss, (bs, metrics)

  def predict(self, params, batch_stats, color):
    """Eval-mode logits ``[B, H, W, C]`` of val ``color`` [B, T, H, W, 3]."""
    x = _centre(color, self.centre["val"])[:, None]
    out = self.model.apply({"params": params, "batch_stats": batch_stats},
                           x, (0,), train=False, pose=False)
    return out["semantics"].astype(jnp.float32)


# -- data -------------------------------------------------------------------


def check_folder(stream, role: str) -> None:
  """Fails at once, naming the dataset and layout, if a folder is wrong.

  (Pseudo-depth folders are checked file by file by
  ``export.check_pseudo_depth``.)

  Args:
    stream: stream config with ``path``.
    role: ``target``, ``unlabeled``, ``source`` or ``val``.

  Raises:
    FileNotFoundError: the folder or a layout sub-folder is missing.
  """
  name = _ROLE_NAMES.get(role, role)
  path = stream.path
  expected = _LAYOUT_FOLDERS[stream.layout]
  want = ", ".join("|".join(f + "/" for f in alts) for alts in expected)
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(
        f"config.data.{role}.path={path!r} does not exist: expected the "
        f"{name} in the {stream.layout} layout ({want}); set "
        f"--config.data_root or --config.data.{role}.path")
  for alts in expected:
    if not any(os.path.isdir(os.path.join(path, f)) for f in alts):
      raise FileNotFoundError(
          f"config.data.{role}.path={path!r} is not a {stream.layout} "
          f"folder: expected the {name} with {want}, found none of "
          f"{list(alts)}")


def resolve_streams(config: mlc.ConfigDict) -> dict[str, Any]:
  """Streams of the run with paths filled in from ``config.data_root``.

  A stream with an empty ``path`` reads ``<data_root>/<config.folders.
  <role>>``; the source and union streams with an empty
  ``pseudo_depth_dir`` read ``<data_root>/<config.folders.<role>_depth>``.
  Every folder is checked at once (``check_folder``).

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
  out = {}
  for role in roles:
    s = mlc.ConfigDict(config.data[role].to_dict())
    if not s.path:
      s.path = os.path.join(config.data_root, config.folders[role])
    if role in ("source", "unlabeled") and not s.pseudo_depth_dir:
      s.pseudo_depth_dir = os.path.join(config.data_root,
                                        config.folders[role + "_depth"])
    check_folder(s, role)
    if s.pseudo_depth_dir:
      # Every image has its file, in the format this run reads; the error
      # names the missing file and the export command that writes it.
      export.check_pseudo_depth(
          s, role=role, depth_scale=sc.depth_scale,
          normalize=sc.depth_scale == "reference" and role == "unlabeled")
    out[role] = s
  return out


def make_train_stream(config, streams, data_dir: str) -> seg.NamedIterators:
  """``{"target", "source", "unlabeled"}`` batches (as the method needs);
  with MGS the source leaves are ``[B, num_candidates, ...]``."""
  sc = config.ssda
  names = [r for r in ("target", "source", "unlabeled") if r in streams]
  sizes = {"target": sc.batch_target, "source": sc.batch_source,
           "unlabeled": sc.batch_unlabeled}
  cand = {"source": sc.num_candidates} if sc.mgs else {}
  return seg.NamedIterators(**streams_lib.make_stream_loaders(
      {n: streams[n] for n in names}, {n: sizes[n] for n in names},
      seed=config.seed, data_dir=data_dir, candidates=cand))


def example_batch(config: mlc.ConfigDict) -> dict[str, Any]:
  """ShapeDtypeStructs of what ``SSDATask.init`` reads."""
  st = config.data.target
  h, w = tuple(st.crop_size) if len(st.crop_size) else tuple(st.image_size)
  t = len(st.frame_offsets)
  return {"target": {"color": jax.ShapeDtypeStruct(
      (config.ssda.batch_target, t, h, w, 3), jnp.uint8)}}


# -- evaluation -------------------------------------------------------------


class Evaluator:
  """Student and teacher mIoU on the target val split (§7).

  ``run(state)`` returns scalars: ``miou`` (student), ``miou_teacher``,
  ``miou16``/``miou13`` (Synthia subsets, ``config.eval.class_subsets``),
  ``miou_rel`` (100 * miou / ``config.eval.fully_supervised_miou`` when
  given, Tables 15/16) and writes per-class IoUs to
  ``<workdir>/eval/step_<N>.json`` plus a markdown table.
  """

  def __init__(self, task: SSDATask, config, mesh, stream, data_dir: str,
               workdir: str):
    self.task, self.config, self.mesh = task, config, mesh
    self.stream, self.data_dir, self.workdir = stream, data_dir, workdir
    c = config.model.num_classes

    def update(conf_s, conf_t, student, teacher, batch):
      lbl = batch["label"]
      conf_s = seg_eval.update_from_logits(
          conf_s, task.predict(*student, batch["color"]), lbl)
      conf_t = seg_eval.update_from_logits(
          conf_t, task.predict(*teacher, batch["color"]), lbl)
      return conf_s, conf_t

    repl = sharding_lib.replicated(mesh)
    self._update = jax.jit(update, out_shardings=(repl, repl))
    self._zero = seg_eval.init_confusion(c)

  def batches(self):
    from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    ec = self.config.eval
    loader = pipeline.make_loader(
        self.stream, split=ec.split, global_batch_size=ec.batch_size,
        seed=self.config.seed, train=False, mesh=self.mesh,
        data_dir=self.data_dir)
    for i, b in enumerate(loader):
      if ec.num_batches and i >= ec.num_batches:
        break
      yield b
    loader.close()

  def confusions(self, state):
    conf_s = conf_t = jax.device_put(self._zero,
                                     sharding_lib.replicated(self.mesh))
    student = (state.params, state.batch_stats)
    # The teacher with its own statistics (``config.train.
    # teacher_batch_stats``); without one, the student again.
    teacher = (student if state.ema_params is None else
               (state.ema_params, state.ema_batch_stats))
    for b in self.batches():
      b = {"color": b["color"], "label": b["label"]}
      conf_s, conf_t = self._update(conf_s, conf_t, student, teacher, b)
    return np.asarray(jax.device_get(conf_s)), np.asarray(
        jax.device_get(conf_t))

  def run(self, state) -> dict[str, float]:
    conf_s, conf_t = self.confusions(state)
    res = summarize(conf_s, conf_t, self.config.eval)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
      out = os.path.join(self.workdir, "eval")
      os.makedirs(out, exist_ok=True)
      record = dict(step=step, **{k: v for k, v in res.items()
                                  if not k.startswith("_")},
                    iou=res["_iou"].tolist(),
                    iou_teacher=res["_iou_teacher"].tolist(),
                    confusion=conf_s.tolist())
      with open(os.path.join(out, f"step_{step}.json"), "w") as f:
        json.dump(record, f, indent=1, default=_nan_to_none)
      with open(os.path.join(out, "latest.json"), "w") as f:
        json.dump(record, f, indent=1, default=_nan_to_none)
      tables.write_iou_table(
          os.path.join(out, f"table_step_{step}.md"),
          {"student": res["_iou"], "teacher": res["_iou_teacher"]},
          class_ids=(None if not self.config.eval.table_classes else
                     tuple(self.config.eval.table_classes)))
    return {k: v for k, v in res.items() if not k.startswith("_")}


def _nan_to_none(x):
  return None if isinstance(x, float) and np.isnan(x) else x


def summarize(conf_s: np.ndarray, conf_t: np.ndarray, ec) -> dict[str, Any]:
  """mIoU figures of the student/teacher confusion matrices.

  Args:
    conf_s, conf_t: [C, C] confusion matrices.
    ec: ``config.eval`` (``class_subsets``: ``((name, ids), ...)``;
      ``fully_supervised_miou``: the baseline's mIoU in percent, 0 = none).

  Returns:
    ``{"miou", "miou_teacher", "<subset name>", "miou_rel", "_iou",
    "_iou_teacher"}`` (mIoU in percent; ``_``-keys are arrays).
  """
  s = seg_eval.segmentation_scores(conf_s)
  t = seg_eval.segmentation_scores(conf_t)
  res = {"miou": 100 * s["miou"], "miou_teacher": 100 * t["miou"],
         "pixel_acc": 100 * s["overall_acc"], "_iou": s["iou"],
         "_iou_teacher": t["iou"]}
  for name, ids in ec.class_subsets:
    res[name] = 100 * seg_eval.subset_miou(s["iou"], ids)
  if ec.fully_supervised_miou > 0:
    main = res[ec.relative_to] if ec.relative_to else res["miou"]
    res["miou_rel"] = 100 * main / ec.fully_supervised_miou
  return res


def make_image_fn(task: SSDATask, evaluator: Evaluator, num: int):
  """TensorBoard panels: image | student prediction | GT."""
  from sdeseg_jax import report  # pylint: disable=g-import-not-at-top

  def image_fn(state):
    b = next(evaluator.batches())
    logits = task.predict(state.params, state.batch_stats, b["color"])
    pred = np.asarray(jax.device_get(jnp.argmax(logits, -1)))
    host = jax.device_get(b)
    return {"predictions": report.prediction_panels(
        host["color"][:, task.centre["val"]], pred, host["label"], num)}
  return image_fn


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
  """Entry point of ``mode=ssda``; returns the final evaluation."""
  check_method(config.ssda)
  streams = resolve_streams(config)
  config = resolve_init(config)
  mesh = sharding_lib.make_mesh()
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  task = SSDATask(config)
  train_iter = make_train_stream(config, streams, data_dir)
  evaluator = Evaluator(task, config, mesh, streams["val"], data_dir,
                        workdir)
  image_fn = (make_image_fn(task, evaluator, config.eval.num_images)
              if config.train.image_every else None)
  state = trainer.fit(config, workdir, task=task, train_iter=train_iter,
                      example_batch=example_batch(config), mesh=mesh,
                      eval_fn=evaluator.run if config.eval.split else None,
                      image_fn=image_fn)
  train_iter.close()
  result = {}
  if config.eval.split:
    # fit evaluates at the last step when eval_every > 0; reuse that.
    latest = os.path.join(workdir, "eval", "latest.json")
    step = int(jax.device_get(state.step))
    if os.path.isfile(latest):
      with open(latest) as f:
        rec = json.load(f)
      if rec["step"] == step:
        result = {k: v for k, v in rec.items()
                  if isinstance(v, (int, float)) and k != "step"}
    if not result:
      result = evaluator.run(state)
  logging.info("final evaluation: %s", result)
  return result


def mix_examples(task: SSDATask, batch: dict[str, Any]) -> dict[str, Any]:
  """Host-side DepthMix illustration of one training batch (report panels).

  Args:
    task: the task (reads its ``config.ssda``).
    batch: a ``make_train_stream`` batch with ``source`` and ``unlabeled``.

  Returns:
    numpy ``target``/``source`` images [B, H, W, 3] float, the cross-domain
    mix ``cdm`` and mask ``cdm_mask`` (margin +m, no sign flip), the
    target-domain mix ``tdm`` and mask ``tdm_mask``, and the MGS choice
    ``mgs_index`` [B] (or None).
  """
  sc = task.sc

  def examples(unl, src):
    idx = None
    if sc.mgs:
      src, idx, _ = task.select_source(src, unl["pseudo_depth"])
    x_u = _centre(unl["color"], task.centre["unlabeled"])
    x_s = _centre(src["color"], task.centre["source"])
    d_u = _mask_disp(unl["pseudo_depth"], sc.depth_scale)
    d_s = _mask_disp(src["pseudo_depth"], sc.depth_scale)
    cdm_mask = masks_lib.depth_compare_mask(d_s, d_u, sc.margin)
    partner = masks_lib.pair_partner_index(x_u.shape[0])
    tdm_mask = masks_lib.depth_mix_mask(d_u, partner, sc.margin)
    return dict(target=x_u, source=x_s,
                cdm=mix_lib.cross_domain_mix(cdm_mask, x_s, x_u),
                cdm_mask=cdm_mask,
                tdm=mix_lib.mix_with_partner(tdm_mask, x_u, partner),
                tdm_mask=tdm_mask, mgs_index=idx)

  keys = ("color", "pseudo_depth")
  unl = {k: batch["unlabeled"][k] for k in keys}
  src = {k: batch["source"][k] for k in keys}
  return jax.device_get(jax.jit(examples)(unl, src))
