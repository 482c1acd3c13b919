"""Mode ``sde``: self-supervised depth (monodepth2) pretraining.

  python -m sdeseg_jax.main --config=configs/sde_minicity.py --workdir=W

The SDE task (REFERENCE_SPEC 3, 4.2): ``SDENet`` on the augmented frames
``color_aug`` predicts multi-scale disparities of the centre frame and one
pose per neighbour; ``cam_T_cam(0, f) = transformation_from_parameters(
axisangle[f], translation[f], invert=f < 0)``; the loss is
``monodepth_loss`` on the *non-augmented* ``color`` and centre ``pyramid``,
plus ``lambda_F * ||f4 - f4_ImageNet||_2`` (``config.loss.
feature_distance_weight``) against the frozen ImageNet copy of the encoder
in the fine-tuning stage.

Stages are config variants (``configs/sde_cityscapes.py:stage=N``): a frozen
encoder is an optimiser group ``("encoder/.*", "frozen")`` while the encoder
BatchNorm stays in train mode (batch statistics, running averages updated),
as in the reference. Weights come from ``config.model.encoder_init`` /
``pose_encoder_init`` (ImageNet npz files) and from an earlier stage's
workdir (``config.init.checkpoint``, parameters whose path matches one of
``config.init.patterns``).
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax.data import resolve
from sdeseg_jax.eval import depth as depth_eval
from sdeseg_jax.geometry.transforms import transformation_from_parameters
from sdeseg_jax.losses.feature import feature_distance
from sdeseg_jax.losses.monodepth import monodepth_loss
from sdeseg_jax.models import joint
from sdeseg_jax.models import pose as pose_lib
from sdeseg_jax.models import pretrained
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding as sharding_lib


def to_float(x: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]; float images pass through."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def cam_T_cam(out: dict[str, Any], offsets) -> dict[int, jax.Array]:
  """``{f: [B, 4, 4]}`` centre->source transforms from the pose outputs."""
  return {f: transformation_from_parameters(
      out["axisangle"][f], out["translation"][f], invert=f < 0)
          for f in offsets if f != 0}


def apply_init_checkpoint(variables: dict[str, Any], init_cfg
                          ) -> dict[str, Any]:
  """Copies matching parameters/statistics from an earlier run.

  Args:
    variables: ``{"params", "batch_stats"}`` numpy trees of this model.
    init_cfg: ``config.init`` with ``checkpoint`` (an earlier workdir or
      checkpoints folder; "" = nothing) , ``step`` (-1 = latest) and
      ``patterns`` (regexes over ``/``-joined paths *without* the
      collection, e.g. ``"pose/.*"``; a BN layer's statistics follow its
      parameters).

  Returns:
    The updated variables.

  Raises:
    ValueError: a pattern matches nothing or a shape differs.
  """
  if not init_cfg.checkpoint:
    return variables
  prev = ckpt_lib.load_variables(
      init_cfg.checkpoint, None if init_cfg.step < 0 else init_cfg.step)
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  used = {p: 0 for p in init_cfg.patterns}
  for col in ("params", "batch_stats"):
    for path, value in flax.traverse_util.flatten_dict(
        prev[col], sep="/").items():
      for p in init_cfg.patterns:
        if re.fullmatch(p, path):
          key = f"{col}/{path}"
          if key not in flat or np.shape(flat[key]) != np.shape(value):
            raise ValueError(
                f"config.init: {key} from {init_cfg.checkpoint} "
                f"{np.shape(value)} does not fit this model "
                f"({np.shape(flat[key]) if key in flat else 'absent'})")
          flat[key] = np.asarray(value, np.asarray(flat[key]).dtype)
          used[p] += 1
          break
  for p, n in used.items():
    if not n:
      raise ValueError(f"config.init.patterns: {p!r} matches no variable of "
                       f"{init_cfg.checkpoint}")
  logging.info("init from %s step %d: %s", init_cfg.checkpoint, prev["step"],
               used)
  return flax.traverse_util.unflatten_dict(flat, sep="/")


class SDETask:
  """The SDE task for ``trainer.fit`` (see ``step.Task``)."""

  def __init__(self, config: mlc.ConfigDict):
    self.config = config
    self.model = joint.from_config(config.model)
    self.offsets = tuple(sorted(config.loss.frame_offsets))
    self.loss_cfg = config.loss
    if self.offsets == (0,):
      raise ValueError("config.loss.frame_offsets needs neighbours for SDE, "
                       f"got {self.offsets}")
    if config.loss.gt_pose and not config.data.train.get("with_pose"):
      raise ValueError(
          "config.loss.gt_pose=True warps with ground-truth poses: set "
          "config.data.train.with_pose=True (MiniCity streams only)")

  def init(self, rng, batch):
    v = self.model.init({"params": rng, "dropout": rng},
                        to_float(batch["color_aug"]), self.offsets,
                        train=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """Host-side weight loading for a fresh run: ImageNet npz files, the
    pose net's translation prior, an earlier run (``config.init``)."""
    mc = self.config.model
    variables = {"params": params, "batch_stats": batch_stats}
    if mc.encoder_init:
      enc = pretrained.load_npz(mc.encoder_init)
      variables = pretrained.merge_variables(variables, enc, at=("encoder",))
      if mc.imnet_encoder:
        variables = pretrained.merge_variables(variables, enc,
                                               at=("imnet_encoder",))
    elif mc.imnet_encoder:
      raise ValueError("config.model.imnet_encoder needs "
                       "config.model.encoder_init (the ImageNet weights)")
    if mc.pose_encoder_init:
      variables = pretrained.merge_variables(
          variables, pretrained.load_npz(mc.pose_encoder_init),
          at=("pose", "encoder"))
    variables = jax.device_get(variables)
    if mc.get("pose_translation_prior"):
      if "pose" not in variables["params"]:
        raise ValueError("config.model.pose_translation_prior needs the "
                         "pose net (config.model.pose=True)")
      params = dict(variables["params"])
      params["pose"] = jax.device_get(pose_lib.with_translation_prior(
          params["pose"], mc.pose_translation_prior))
      variables = dict(variables, params=params)
    # An earlier run's weights (config.init) win over the prior.
    variables = apply_init_checkpoint(variables, self.config.init)
    return variables["params"], variables["batch_stats"]

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    """SDE loss of one batch; see the module docstring.

    Args:
      params, batch_stats: model variables.
      batch: ``color``/``color_aug`` [B, T, H, W, 3] uint8, ``pyramid``
        {"s1".."s3"} [B, H/2^s, W/2^s, 3] uint8, ``K``/``inv_K`` [B, 4, 4];
        ``gt_cam_T_cam`` [B, T, 4, 4] with ``config.loss.gt_pose``.
      rng: per-step key (dropout, automask noise).
      step: [] int (unused).
      teacher: unused (SDE has no mean teacher).

    Returns:
      ``(loss, (new_batch_stats, metrics))``.
    """
    del step, teacher
    drop_rng, loss_rng = jax.random.split(rng)
    out, new = self.model.apply(
        {"params": params, "batch_stats": batch_stats},
        to_float(batch["color_aug"]), self.offsets, train=True,
        rngs={"dropout": drop_rng}, mutable=["batch_stats"])
    disps = {s: out["disp"][s].astype(jnp.float32)
             for s in self.loss_cfg.scales}
    pyramid = {s: to_float(batch["pyramid"][f"s{s}"])
               for s in self.loss_cfg.scales if s > 0}
    poses = cam_T_cam(out, self.offsets)
    if self.loss_cfg.gt_pose:
      # Oracle: the ground-truth transforms replace the pose net's (which
      # then gets no gradient).
      poses = {f: batch["gt_cam_T_cam"][:, i]
               for i, f in enumerate(self.offsets) if f != 0}
    loss, aux = monodepth_loss(
        disps, to_float(batch["color"]), pyramid, poses, batch["K"],
        batch["inv_K"], loss_rng, self.loss_cfg)
    metrics = {k: v for k, v in aux.items()
               if isinstance(v, jax.Array) and v.ndim == 0}
    metrics["sde_loss"] = loss
    if self.loss_cfg.feature_distance_weight:
      fd = feature_distance(out["features"]["f4"], out["imnet_f4"])
      metrics["feature_distance"] = fd
      loss = loss + self.loss_cfg.feature_distance_weight * fd
    metrics["mean_disp"] = jnp.mean(disps[0])
    return loss, (new["batch_stats"], metrics)

  def predict(self, params, batch_stats, batch):
    """Eval-mode prediction on the non-augmented frames.

    Returns:
      ``{"disp": [B, H, W, 1], "cam_T_cam": {f: [B, 4, 4]}}`` (poses only
      when the batch has neighbour frames).
    """
    color = to_float(batch["color"])
    offsets = self.offsets if color.shape[1] == len(self.offsets) else (0,)
    out = self.model.apply({"params": params, "batch_stats": batch_stats},
                           color, offsets, train=False,
                           pose=len(offsets) > 1)
    res = {"disp": out["disp"][0].astype(jnp.float32)}
    if len(offsets) > 1:
      res["cam_T_cam"] = cam_T_cam(out, offsets)
    return res


def example_batch(config: mlc.ConfigDict) -> dict[str, Any]:
  """ShapeDtypeStructs of the training batch (for parameter init)."""
  st = config.data.train
  h, w = tuple(st.crop_size) if len(st.crop_size) else tuple(st.image_size)
  t = len(config.loss.frame_offsets)
  b = config.train.batch_size
  return {"color_aug": jax.ShapeDtypeStruct((b, t, h, w, 3), jnp.uint8)}


def make_eval_fns(task: SDETask, config: mlc.ConfigDict, mesh, stream,
                  data_dir: str):
  """``(eval_fn, image_fn)`` for ``trainer.fit`` over the val split.

  Single-process: the host reads whole global arrays (``np.asarray``); a
  multi-host evaluation would gather them first.
  """
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  repl = sharding_lib.replicated(mesh)
  predict = jax.jit(task.predict, out_shardings=repl)
  ec = config.eval

  def batches():
    loader = pipeline.make_loader(
        stream, split=ec.split, global_batch_size=ec.batch_size,
        seed=config.seed, train=False, data_dir=data_dir)
    try:
      for i, b in enumerate(loader):
        if ec.num_batches and i >= ec.num_batches:
          break
        yield sharding_lib.host_to_global(b, mesh)
    finally:
      loader.close()  # also when the consumer stops early

  def eval_fn(state):
    def predict_fn(batch):
      out = jax.device_get(predict(state.params, state.batch_stats, batch))
      out["offsets"] = task.offsets
      return out
    return depth_eval.evaluate(predict_fn, batches(),
                               pred_min_depth=config.loss.min_depth,
                               pred_max_depth=config.loss.max_depth)

  def image_fn(state):
    with contextlib.closing(batches()) as it:
      b = next(it)
    out = jax.device_get(predict(state.params, state.batch_stats, b))
    host = jax.device_get(b)
    center = task.offsets.index(0) if host["color"].shape[1] > 1 else 0
    return {"depth_panels": depth_eval.panels(
        host["color"][:, center], out["disp"][..., 0],
        host.get("depth"), max_images=ec.num_images)}

  return eval_fn, image_fn


def run(config: mlc.ConfigDict, workdir: str) -> None:
  """Entry point of ``mode=sde``."""
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  mesh = sharding_lib.make_mesh()
  path = resolve.dataset_root(config, "train", workdir)
  stream = resolve.with_overrides(config.data.train, path=path)
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  loader = pipeline.make_loader(
      stream, split="train", global_batch_size=config.train.batch_size,
      seed=config.seed, train=True, data_dir=data_dir)
  task = SDETask(config)
  eval_fn = image_fn = None
  if config.eval.split:
    val_stream = resolve.with_overrides(
        config.data.val, path=config.data.val.path or path)
    eval_fn, image_fn = make_eval_fns(task, config, mesh, val_stream,
                                      data_dir)
  trainer.fit(config, workdir, task=task, train_iter=loader,
              example_batch=example_batch(config), mesh=mesh,
              eval_fn=eval_fn, image_fn=image_fn)
  loader.close()
