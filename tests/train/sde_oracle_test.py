"""The SDE task's pose diagnostics: the ground-truth-pose oracle
(``config.loss.gt_pose``) and the pose net's translation prior."""

import os
import sys

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import sde_minicity  # noqa: E402
from sdeseg_jax.models import pose as pose_lib  # noqa: E402
from sdeseg_jax.train import sde  # noqa: E402


def _config(gt_pose: bool, pose_prior: float = 0.0):
  config = sde_minicity.get_config(
      f"runlocal,gt_pose={gt_pose},pose_prior={pose_prior}")
  config.model.update(dict(encoder_depth=10, width=8, pose_depth=10))
  return config


def _batch(b=2, h=32, w=64, seed=0):
  rs = np.random.RandomState(seed)
  color = rs.randint(0, 256, (b, 3, h, w, 3)).astype(np.uint8)
  k = np.array([[0.6 * w, 0, w / 2, 0], [0, 1.2 * h, h / 2, 0],
                [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
  ks = np.repeat(k[None], b, 0)
  pyramid = {f"s{s}": color[:, 1, ::2 ** s, ::2 ** s] for s in (1, 2, 3)}
  # Pure translations for the neighbours, the identity for the centre.
  t = np.tile(np.eye(4, dtype=np.float32), (b, 3, 1, 1))
  t[:, 0, :3, 3] = rs.normal(0, 0.1, (b, 3))
  t[:, 2, :3, 3] = rs.normal(0, 0.1, (b, 3))
  return {"color": color, "color_aug": color, "pyramid": pyramid, "K": ks,
          "inv_K": np.linalg.inv(ks), "gt_cam_T_cam": t.astype(np.float32)}


class GtPoseTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.batch = _batch()
    cls.tasks = {g: sde.SDETask(_config(g)) for g in (False, True)}
    params, bs = cls.tasks[False].init(jax.random.PRNGKey(0), cls.batch)
    cls.params, cls.bs = params, bs

    def loss_and_grad(task):
      return jax.jit(jax.value_and_grad(
          lambda p, b: task.loss_fn(p, cls.bs, b, jax.random.PRNGKey(1),
                                    0)[0]))
    cls.fns = {g: loss_and_grad(t) for g, t in cls.tasks.items()}

  def test_oracle_uses_the_batch_poses_and_leaves_the_pose_net_alone(self):
    moved = dict(self.batch)
    moved["gt_cam_T_cam"] = self.batch["gt_cam_T_cam"].copy()
    moved["gt_cam_T_cam"][:, 0, 0, 3] += 0.3
    loss, grads = self.fns[True](self.params, self.batch)
    loss_moved, _ = self.fns[True](self.params, moved)
    # The ground-truth transforms drive the warp ...
    self.assertGreater(abs(float(loss) - float(loss_moved)), 1e-6)
    # ... and the pose net gets no gradient.
    pose_norm = sum(float(jnp.sum(g ** 2))
                    for g in jax.tree.leaves(grads["pose"]))
    depth_norm = sum(float(jnp.sum(g ** 2))
                     for k, v in grads.items() if k != "pose"
                     for g in jax.tree.leaves(v))
    self.assertEqual(pose_norm, 0.0)
    self.assertGreater(depth_norm, 0.0)

  def test_without_oracle_the_batch_poses_are_ignored(self):
    moved = dict(self.batch)
    moved["gt_cam_T_cam"] = self.batch["gt_cam_T_cam"] * 0 + np.eye(4)
    loss, grads = self.fns[False](self.params, self.batch)
    loss_moved, _ = self.fns[False](self.params, moved)
    self.assertEqual(float(loss), float(loss_moved))
    pose_norm = sum(float(jnp.sum(g ** 2))
                    for g in jax.tree.leaves(grads["pose"]))
    self.assertGreater(pose_norm, 0.0)

  def test_oracle_needs_a_pose_stream(self):
    config = _config(True)
    config.data.train.with_pose = False
    with self.assertRaisesRegex(ValueError, "with_pose"):
      sde.SDETask(config)


class TranslationPriorTest(absltest.TestCase):

  def test_fresh_pose_net_starts_at_the_prior(self):
    batch = _batch()
    task = sde.SDETask(_config(False, pose_prior=0.02))
    self.assertEqual(tuple(task.config.model.pose_translation_prior),
                     (0.0, 0.0, -0.02))
    params, bs = task.init(jax.random.PRNGKey(3), batch)
    predict = jax.jit(lambda p, s, b: task.predict(
        {"params": p, "batch_stats": s}, b))
    before = predict(params, bs, batch)["cam_T_cam"][1]
    params, bs = task.load_pretrained(params, bs)
    after = predict(params, bs, batch)["cam_T_cam"][1]
    # Random init: a translation of no particular direction, ~1e-3 long.
    self.assertLess(float(jnp.max(jnp.abs(before[:, :3, 3]))), 5e-3)
    # With the prior: ~(0, 0, -0.02) for every input (the random kernel
    # adds a little); the rotation is untouched.
    np.testing.assert_allclose(after[:, :3, 3],
                               np.tile([0.0, 0.0, -0.02], (2, 1)),
                               atol=5e-3)
    np.testing.assert_allclose(after[:, :3, :3], before[:, :3, :3],
                               atol=1e-6)

  def test_bad_prior_is_refused(self):
    with self.assertRaisesRegex(ValueError, "3 floats"):
      pose_lib.with_translation_prior(
          {"decoder": {"pose_2": {"bias": jnp.zeros(12)}}}, (0.0, 1.0))


if __name__ == "__main__":
  absltest.main()
