"""Mode ``sde``: self-supervised depth (monodepth2) pretraining.

  python -m sdeseg_jax.main --config=configs/sde_minicity.py --workdir=W

The SDE task, as the reference trains it: ``SDENet`` on the augmented
frames ``color_aug`` predicts multi-scale disparities of the centre frame
and one pose per neighbour; ``cam_T_cam(0, f) = transformation_from_
parameters(axisangle[f], translation[f], invert=f < 0)``; the loss is
``monodepth_loss`` on the *non-augmented* ``color`` and centre ``pyramid``
(``toolkit.sde_loss``), plus ``lambda_F * ||f4 - f4_ImageNet||_2``
(``config.loss.feature_distance_weight``) against the frozen ImageNet copy
of the encoder in the fine-tuning stage.

Stages are config variants (``configs/sde_cityscapes.py:stage=N``): a frozen
encoder is an optimiser group ``("encoder/.*", "frozen")`` while the encoder
BatchNorm stays in train mode (batch statistics, running averages updated),
as in the reference. Weights come from ``config.model.encoder_init`` /
``pose_encoder_init`` (ImageNet npz files) and from an earlier stage's
workdir (``config.init``, ``toolkit.apply_init``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc

from sdeseg_jax.data import resolve
from sdeseg_jax.eval import evaluators as evaluators_lib
from sdeseg_jax.losses.feature import feature_distance
from sdeseg_jax.models import joint
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import toolkit
from sdeseg_jax.utils import sharding as sharding_lib


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
                        toolkit.to_float(batch["color_aug"]), self.offsets,
                        train=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """ImageNet npz files, the pose net's translation prior, an earlier run
    (``config.init``); see ``toolkit.load_initial_weights``."""
    return toolkit.load_initial_weights(params, batch_stats, self.config)

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
      ``(loss, TaskAux)``.
    """
    del step, teacher
    drop_rng, loss_rng = jax.random.split(rng)
    out, new_bs = toolkit.student_apply(
        self.model, params, batch_stats,
        toolkit.to_float(batch["color_aug"]), self.offsets, drop_rng,
        pose=True)
    poses = None
    if self.loss_cfg.gt_pose:
      # Oracle: the ground-truth transforms replace the pose net's (which
      # then gets no gradient).
      poses = {f: batch["gt_cam_T_cam"][:, i]
               for i, f in enumerate(self.offsets) if f != 0}
    loss, aux = toolkit.sde_loss(out, batch, self.offsets, self.loss_cfg,
                                 loss_rng, poses=poses)
    metrics = toolkit.scalar_metrics(aux)
    metrics["sde_loss"] = loss
    if self.loss_cfg.feature_distance_weight:
      fd = feature_distance(out["features"]["f4"], out["imnet_f4"])
      metrics["feature_distance"] = fd
      loss = loss + self.loss_cfg.feature_distance_weight * fd
    metrics["mean_disp"] = jnp.mean(aux["disps"][0])
    return loss, step_lib.TaskAux(new_bs, metrics)

  def predict(self, variables, batch):
    """Eval-mode prediction on the non-augmented frames ``color``.

    Returns:
      ``{"disp": [B, H, W, 1], "cam_T_cam": {f: [B, 4, 4]}}`` (poses only
      when the batch has neighbour frames).
    """
    color = toolkit.to_float(batch["color"])
    offsets = self.offsets if color.shape[1] == len(self.offsets) else (0,)
    out = self.model.apply(variables, color, offsets, train=False,
                           pose=len(offsets) > 1)
    return toolkit.predictions(out, offsets)


def example_batch(config: mlc.ConfigDict) -> dict[str, Any]:
  """ShapeDtypeStructs of the training batch (for parameter init)."""
  return toolkit.example_batch(config.data.train, config.train.batch_size,
                               num_frames=len(config.loss.frame_offsets))


def make_evaluators(task: SDETask, config: mlc.ConfigDict, mesh, stream,
                    data_dir: str, workdir: str):
  """The depth evaluator of ``config.eval`` over ``stream``'s val split."""
  return [evaluators_lib.DepthEvaluator(
      task.predict, lambda: toolkit.eval_batches(stream, config, data_dir),
      mesh=mesh, workdir=workdir, min_depth=config.loss.min_depth,
      max_depth=config.loss.max_depth, offsets=task.offsets,
      num_images=config.eval.num_images)]


def run(config: mlc.ConfigDict, workdir: str):
  """Entry point of ``mode=sde``; returns the final state."""
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  mesh = sharding_lib.make_mesh()
  path = resolve.dataset_root(config, "train", workdir)
  stream = resolve.with_overrides(config.data.train, path=path)
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  loader = pipeline.make_loader(
      stream, split="train", global_batch_size=config.train.batch_size,
      seed=config.seed, train=True, data_dir=data_dir)
  task = SDETask(config)
  evaluators = []
  if config.eval.split:
    val_stream = resolve.with_overrides(
        config.data.val, path=config.data.val.path or path)
    evaluators = make_evaluators(task, config, mesh, val_stream, data_dir,
                                 workdir)
  return toolkit.run(
      config, workdir, task=task, train_iter=loader, mesh=mesh,
      example_batch=example_batch(config), evaluators=evaluators)
