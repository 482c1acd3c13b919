r"""Mode ``ssl``: semi-supervised segmentation with self-supervised depth.

  python -m sdeseg_jax.main --config=configs/ssl_minicity.py:row=depthmix \
      --workdir=/tmp/ssl_minicity

One optimiser step (as the reference's SSL trainer runs it; IJCV §3.3-3.4),
all inside the jitted ``train_step`` and vectorised over the batch:

1. *Labeled batch* (``batch["labeled"]``): the student on ``color_aug``
   gives the supervised CE (PAD: mean of final and intermediate CE). With
   ``config.ssl.sde_weight > 0`` (multi-task) the pose net runs on the
   neighbour frames and the monodepth2 loss L_D of the sequence is added.
2. *Unlabeled batch* (``batch["unlabeled"]``, the union of labeled and
   unlabeled images when ``config.mix.use_gt``) if ``config.ssl.unlabeled``:
   the mean teacher (``state.ema_params``) gives the class probabilities, in
   train mode (reference) or inference mode (``config.mix.teacher_mode``).
3. Online depth (``config.mix.depth_source == "online"``, 212) or
   ``config.ssl.sde_on_unlabeled``: the student runs on the unmixed
   unlabeled batch; its scale-0 disparity drives DepthMix, and with
   ``sde_on_unlabeled`` the SDE loss of that batch is added too (the
   reference counts L_D twice per iteration this way).
4. Mask (DepthMix / ClassMix / CutMix / ones), mix of images, pseudo labels
   and confidences with the same mask (image i with its pair partner i^1),
   strong augmentation, the student on the mixed images and the pseudo-label
   loss ``q * CE`` (one q per batch, τ = 0.968, as the reference). With
   ``config.ssl.mixed_pose`` (the reference's 212 rows) that forward also
   runs the pose
   net on (mixed centre, original neighbour frames): its outputs are unused
   (no gradient reaches the pose net), but its BatchNorm running statistics
   take the update the reference gives them.

L = λ_seg·CE + λ_D·L_D(labeled) [+ λ_D·L_D(unlabeled)] + w·q·CE(mixed).
BatchNorm statistics are threaded through every student forward, as every
train-mode forward updates them in the reference. The engine
(``train/step.py``) applies the update, then the EMA teacher update with
α_t = min(1 − 1/(t+1), 0.99) over all parameters (the teacher never uses
the pose net, so averaging it is harmless). The teacher's BatchNorm
statistics (``state.ema_batch_stats``) follow
``config.train.teacher_batch_stats``: ``own`` (reference) keeps the running
statistics of the teacher's own train-mode forward of each step (returned
as the third element of the loss aux), ``ema`` averages the student's,
``student`` copies them. Evaluating the teacher uses
``state.ema_batch_stats`` in every case.

Every random draw (dropout, automask noise, ClassMix classes, CutMix box,
jitter, blur) comes from ``fold_in(state.rng, step)``, and BatchNorm is
global over the batch, so 1 and N devices give the same step.

Two data streams (``config.data.labeled``, ``config.data.unlabeled``) come
from ``pipeline.make_loader`` each and are checkpointed together
(``streams.NamedIterators``). Evaluation: the student and the EMA teacher on
``config.data.val`` with each protocol of ``config.eval.protocols``
(``eval.evaluators.SegmentationEvaluator`` named ``segmentation`` for
``paper`` and ``segmentation_full`` for ``full``): mIoU, per-class IoU,
best-so-far, in ``<workdir>/eval/<evaluator>/``; TensorBoard panels of
predictions and of the DepthMix/ClassMix inputs.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.data import resolve
from sdeseg_jax.data import streams as streams_lib
from sdeseg_jax.eval import evaluators as evaluators_lib
from sdeseg_jax.eval.depth import colorize
from sdeseg_jax.mixing import consistency
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import teacher as teacher_lib
from sdeseg_jax.models import joint
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import toolkit
from sdeseg_jax.utils import sharding as sharding_lib


class SSLTask:
  """The SSL task for ``trainer.fit`` (see ``step.Task``).

  Args:
    config: the full config (``model``, ``loss``, ``ssl``, ``mix``,
      ``train``, ``init``).
  """

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.model = joint.from_config(config.model)
    self.sc = config.ssl
    self.mix = config.mix
    self.loss_cfg = config.loss
    self.offsets = tuple(sorted(config.loss.frame_offsets))
    consistency.check_mix_config(
        self.mix, teacher_batch_stats=config.train.teacher_batch_stats)
    if config.model.seg_head == "none":
      raise ValueError("config.model.seg_head='none' has no segmentation "
                       "head; use pad or transfer for mode=ssl")
    self.has_depth = (config.model.seg_head == "pad" or config.model.depth)
    self.sde = self.sc.sde_weight > 0
    if self.sde:
      if not (self.has_depth and config.model.pose):
        raise ValueError("config.ssl.sde_weight > 0 needs a model with "
                         "depth outputs and config.model.pose=True")
      if self.offsets == (0,):
        raise ValueError("config.ssl.sde_weight > 0 needs neighbour frames "
                         "in config.loss.frame_offsets")
    if self.sc.unlabeled and not config.train.use_ema:
      raise ValueError("config.ssl.unlabeled=True needs the mean teacher: "
                       "set config.train.use_ema=True")
    if self.sc.sde_on_unlabeled and not self.sde:
      raise ValueError("config.ssl.sde_on_unlabeled needs "
                       "config.ssl.sde_weight > 0")
    self.online = (self.sc.unlabeled and self.mix.mask == "depthmix" and
                   self.mix.depth_source == "online")
    if self.online and not self.has_depth:
      raise ValueError("config.mix.depth_source='online' needs a model with "
                       "depth outputs (seg_head='pad' or model.depth=True)")
    if self.sc.mixed_pose and not (self.sc.unlabeled and config.model.pose):
      raise ValueError("config.ssl.mixed_pose runs the pose net in the "
                       "mixed forward: it needs config.ssl.unlabeled=True "
                       "and config.model.pose=True")
    if self.sc.mixed_pose and self.offsets == (0,):
      raise ValueError("config.ssl.mixed_pose needs neighbour frames in "
                       "config.loss.frame_offsets")

  # -- engine interface ----------------------------------------------------

  def init(self, rng, batch):
    x, offsets = self._frames(batch["labeled"], self.sde)
    v = self.model.init({"params": rng, "dropout": rng}, x, offsets,
                        train=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """ImageNet npz (``config.model.encoder_init`` / ``pose_encoder_init``),
    then the SDE run of ``config.init`` (encoder, decoders, pose)."""
    return toolkit.load_initial_weights(params, batch_stats, self.config)

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    """The SSL loss of one step; see the module docstring.

    Args:
      params, batch_stats: student variables.
      batch: ``{"labeled": ..., "unlabeled": ...}`` per docs/design.md
        (``unlabeled`` only with ``config.ssl.unlabeled``).
      rng: per-step key.
      step: [] int (unused; the key already depends on it).
      teacher: ``(ema_params, ema_batch_stats)`` (required when
        ``config.ssl.unlabeled``).

    Returns:
      ``(loss, TaskAux)``; with ``config.ssl.unlabeled`` its
      ``teacher_batch_stats`` are the teacher's statistics after its
      forward (unchanged in eval mode).
    """
    del step
    keys = dict(zip(
        ("drop_lab", "drop_unl", "drop_mix", "teacher", "mask", "aug",
         "sde_lab", "sde_unl"), jax.random.split(rng, 8)))
    bs = batch_stats
    metrics = {}
    lab = batch["labeled"]
    x, offsets = self._frames(lab, self.sde)
    out, bs = self._apply(params, bs, x, offsets, keys["drop_lab"])
    l_seg, m = toolkit.labeled_seg_loss(out, lab["label"])
    metrics.update(m)
    metrics["seg_loss"] = l_seg
    total = self.sc.seg_weight * l_seg
    if self.sde:
      l_d = self._sde_loss(out, lab, keys["sde_lab"])
      metrics["sde_loss"] = l_d
      total = total + self.sc.sde_weight * l_d
    if self.sc.unlabeled:
      if teacher is None:
        raise ValueError("config.ssl.unlabeled needs the EMA teacher in the "
                         "state (config.train.use_ema=True)")
      l_mix, bs, m, mixed = self._unlabeled(params, bs, batch["unlabeled"],
                                            teacher, keys)
      metrics.update(m)
      total = total + l_mix
      return total, step_lib.TaskAux(bs, metrics,
                                     mixed["teacher_batch_stats"])
    return total, step_lib.TaskAux(bs, metrics)

  # -- pieces ----------------------------------------------------------------

  def _frames(self, b, with_neighbours: bool):
    """Network input ``[B, T, H, W, 3]`` float and its frame offsets."""
    return toolkit.input_frames(b["color_aug"], self.offsets,
                                with_neighbours)

  def _apply(self, params, bs, x, offsets, drop_rng, pose=True):
    return toolkit.student_apply(self.model, params, bs, x, offsets,
                                 drop_rng, pose=pose)

  def _sde_loss(self, out, b, rng):
    """monodepth2 loss of a sequence batch (non-augmented targets)."""
    return toolkit.sde_loss(out, b, self.offsets, self.loss_cfg, rng)[0]

  def _unlabeled(self, params, bs, unl, teacher, keys):
    """Teacher, (online depth), the consistency loss of the mixed batch.

    Returns:
      ``(loss, new_batch_stats, metrics, mixed)`` where ``mixed`` holds the
      mixing inputs and outputs (for image panels) and
      ``teacher_batch_stats``, the teacher's statistics after its forward.
    """
    metrics = {}
    loss = jnp.zeros((), jnp.float32)
    frames = toolkit.to_float(unl["color_aug"])
    img = toolkit.centre_frame(frames, self.offsets)
    probs, teacher_bs = teacher_lib.teacher_probs(
        self.model, teacher, img, keys["teacher"], self.mix.teacher_mode)
    student_disp = None
    if self.online or self.sc.sde_on_unlabeled:
      x, offsets = self._frames(unl, self.sc.sde_on_unlabeled)
      out_u, bs = self._apply(params, bs, x, offsets, keys["drop_unl"])
      student_disp = jax.lax.stop_gradient(out_u["disp"][0])
      if self.sc.sde_on_unlabeled:
        l_d = self._sde_loss(out_u, unl, keys["sde_unl"])
        metrics["sde_loss_unlabeled"] = l_d
        loss = loss + self.sc.sde_weight * l_d
    disp = None
    if self.mix.mask == "depthmix":
      disp = consistency.mix_depth(self.mix.depth_source, unl, student_disp)
    use_gt = self.mix.use_gt and "is_labeled" in unl
    ib = consistency.intra_batch(
        self.mix, img, probs, labels=unl["label"] if use_gt else None,
        is_labeled=unl["is_labeled"] if use_gt else None, disp=disp)
    if self.sc.mixed_pose and frames.shape[1] != len(self.offsets):
      raise ValueError(
          f"config.ssl.mixed_pose needs the unlabeled stream to deliver "
          f"the frames {self.offsets}, it delivers {frames.shape[1]} "
          "(set config.data.unlabeled.frame_offsets)")

    def student(x_mix):
      if self.sc.mixed_pose:
        # As the reference's 212 rows: (mixed centre, original neighbours);
        # only the pose encoder's BatchNorm statistics use the pose outputs.
        x = frames.at[:, self.offsets.index(0)].set(x_mix)
        offsets = self.offsets
      else:
        x, offsets = x_mix[:, None], (0,)
      out_m, new_bs = self._apply(params, bs, x, offsets, keys["drop_mix"],
                                  pose=self.sc.mixed_pose)
      return out_m["semantics"], new_bs

    l_u, mixed, bs = consistency.consistency_loss(
        self.mix, *ib, student_fn=student, mask_rng=keys["mask"],
        aug_rng=keys["aug"])
    l_u = self.mix.weight * l_u
    metrics.update(mix_loss=l_u, q=jnp.mean(mixed.weight),
                   mask_mean=jnp.mean(mixed.mask),
                   teacher_conf=jnp.mean(jnp.max(probs, axis=-1)))
    panels = dict(image=mixed.image, conf=mixed.conf, label=mixed.label,
                  mask=mixed.mask, augmented=mixed.augmented, input=img,
                  disp=disp, teacher_batch_stats=teacher_bs)
    return loss + l_u, bs, metrics, panels

  # -- evaluation / panels ---------------------------------------------------

  def predict(self, variables, batch):
    """Eval-mode ``{"logits": [B, H, W, C]}`` of the centre frame of
    ``batch["color"]`` ``[B, T, H, W, 3]``, with ``"disp"`` ``[B, H, W, 1]``
    for nets with a depth head (``toolkit.predictions``)."""
    x, offsets = toolkit.input_frames(batch["color"], self.offsets, False)
    out = self.model.apply(variables, x, offsets, train=False, pose=False)
    return toolkit.predictions(out)

  def mix_preview(self, params, batch_stats, teacher, unl, rng):
    """The mixing of one unlabeled batch, for TensorBoard panels.

    Returns:
      ``{"input", "augmented"}`` ``[B, H, W, 3]``, ``"label"``, ``"mask"``
      ``[B, H, W]``, ``"disp"`` ``[B, H, W]`` (DepthMix) and ``"partner"``
      ``[B]``.
    """
    keys = dict(zip(
        ("drop_lab", "drop_unl", "drop_mix", "teacher", "mask", "aug",
         "sde_lab", "sde_unl"), jax.random.split(rng, 8)))
    _, _, _, mixed = self._unlabeled(params, batch_stats, unl, teacher,
                                     keys)
    del mixed["teacher_batch_stats"]
    mixed["partner"] = masks_lib.pair_partner_index(mixed["mask"].shape[0])
    return mixed


def mix_panels(mixed: dict[str, np.ndarray]) -> np.ndarray:
  """``[N, H, 7 * W, 3]`` uint8 panels of the mixing of each image i.

  Columns: image i | its partner j | depth i | depth j (grey if the mask is
  not depth based) | mask (white = keep i) | mixed, augmented image | mixed
  pseudo label (black = ignore).
  """
  img = np.clip(np.asarray(mixed["input"]) * 255.0, 0, 255).astype(np.uint8)
  partner = np.asarray(mixed["partner"])
  n = img.shape[0]
  if mixed.get("disp") is not None:
    d = colorize(np.asarray(mixed["disp"]), 0.0, 1.0)
  else:
    d = np.full(img.shape, 128, np.uint8)
  mask = (np.asarray(mixed["mask"])[..., None] * 255).astype(np.uint8)
  mask = np.repeat(mask, 3, axis=-1)
  aug = np.clip(np.asarray(mixed["augmented"]) * 255.0, 0, 255).astype(
      np.uint8)
  lab = labels_lib.colorize_train_ids(np.asarray(mixed["label"]))
  rows = [np.concatenate([img[i], img[partner[i]], d[i], d[partner[i]],
                          mask[i], aug[i], lab[i]], axis=1)
          for i in range(n)]
  return np.stack(rows)


# ---------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------


def dataset_path(config: mlc.ConfigDict, workdir: str) -> str:
  """Root of the data (MiniCity generated into the workdir if configured)."""
  return resolve.dataset_root(config, "labeled", workdir, folder="minicity",
                              labels=True)


def _stream(stream: mlc.ConfigDict, path: str) -> mlc.ConfigDict:
  return resolve.with_overrides(stream, path=stream.path or path)


def make_train_iterators(config, path: str, data_dir: str
                         ) -> streams_lib.NamedIterators:
  """The labeled (and unlabeled) training loaders, checkpointed together."""
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  its = {"labeled": pipeline.make_loader(
      _stream(config.data.labeled, path), split="train",
      global_batch_size=config.train.batch_size, seed=config.seed,
      train=True, data_dir=data_dir)}
  if config.ssl.unlabeled:
    # A different seed decorrelates the two streams' orders.
    its["unlabeled"] = pipeline.make_loader(
        _stream(config.data.unlabeled, path), split="train",
        global_batch_size=config.ssl.unlabeled_batch_size,
        seed=config.seed + 1, train=True, data_dir=data_dir)
  return streams_lib.NamedIterators(**its)


def example_batch(config: mlc.ConfigDict) -> dict[str, Any]:
  """ShapeDtypeStructs of the labeled part (for parameter init)."""
  return toolkit.example_batch(config.data.labeled, config.train.batch_size,
                               role="labeled")


def make_evaluators(task: SSLTask, config: mlc.ConfigDict, mesh, path: str,
                    data_dir: str, workdir: str):
  """One segmentation evaluator per protocol of ``config.eval.protocols``
  (``segmentation`` = paper, ``segmentation_full`` = full)."""
  ec = config.eval
  evaluators = []
  for proto in ec.protocols:
    stream = _stream(config.data.val if proto == "paper"
                     else config.data.val_full, path)
    evaluators.append(evaluators_lib.SegmentationEvaluator(
        task.predict,
        lambda s=stream: toolkit.eval_batches(s, config, data_dir),
        mesh=mesh, workdir=workdir,
        name="segmentation" if proto == "paper" else f"segmentation_{proto}",
        num_classes=config.model.num_classes, protocol=proto,
        input_size=tuple(config.data.val.image_size),
        offsets=stream.frame_offsets, class_names=tuple(ec.class_names)))
  return evaluators


def make_mix_image_fn(task: SSLTask, config: mlc.ConfigDict, path: str,
                      mesh, data_dir: str):
  """TensorBoard panels of the mixing of one unlabeled batch."""
  preview = jax.jit(task.mix_preview,
                    out_shardings=sharding_lib.replicated(mesh))
  panel_batch = {}

  def image_fn(state):
    if "unl" not in panel_batch:
      its = make_train_iterators(config, path, data_dir)
      panel_batch["unl"] = sharding_lib.host_to_global(
          next(its)["unlabeled"], mesh)
      its.close()
    mixed = jax.device_get(preview(
        state.params, state.batch_stats,
        (state.ema_params, state.ema_batch_stats), panel_batch["unl"],
        jax.random.PRNGKey(0)))
    return {"mix_panels": mix_panels(mixed)[:config.eval.num_images]}

  return image_fn


def run(config: mlc.ConfigDict, workdir: str):
  """Entry point of ``mode=ssl``; returns the final state."""
  mesh = sharding_lib.make_mesh()
  path = dataset_path(config, workdir)
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  task = SSLTask(config)
  its = make_train_iterators(config, path, data_dir)
  evaluators, image_fn = [], None
  if config.eval.split:
    evaluators = make_evaluators(task, config, mesh, path, data_dir,
                                 workdir)
    if config.ssl.unlabeled:
      image_fn = make_mix_image_fn(task, config, path, mesh, data_dir)
  return toolkit.run(config, workdir, task=task, train_iter=its, mesh=mesh,
                     example_batch=example_batch(config),
                     evaluators=evaluators, image_fn=image_fn)
