"""SDENet, PADNet, transfer head and SegDepthNet: outputs and wiring."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from sdeseg_jax.models import joint
from tests.models import _helpers as H


OFFSETS = (-1, 0, 1)


def _images(t=3, h=32, w=64, seed=0):
  return jax.random.uniform(jax.random.key(seed), (2, t, h, w, 3))


class SDENetTest(absltest.TestCase):

  def test_outputs_and_pose_switch(self):
    model = joint.from_config(common.model_config("tiny", seg_head="none"))
    self.assertIsInstance(model, joint.SDENet)
    x = _images()
    v = H.random_variables(model, x, frame_offsets=OFFSETS)
    self.assertEqual(sorted(v["params"]), ["depth", "encoder", "pose"])

    @jax.jit
    def run(v, x):
      out, upd = model.apply(v, x, OFFSETS, True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})
      single = model.apply(v, x[:, 1:2], (0,), False)
      no_pose = model.apply(v, x, OFFSETS, False, pose=False)
      return out, upd, single, no_pose

    out, upd, single, no_pose = run(v, x)
    for s in range(4):
      self.assertEqual(out["disp"][s].shape, (2, 32 >> s, 64 >> s, 1))
      self.assertEqual(out["disp"][s].dtype, jnp.float32)
    self.assertEqual(sorted(out["axisangle"]), [-1, 1])
    self.assertEqual(out["translation"][1].shape, (2, 3))
    self.assertEqual(out["features"]["f4"].shape[1:3], (2, 4))  # OS16
    self.assertNotIn("axisangle", single)
    self.assertNotIn("axisangle", no_pose)
    # Eval-mode single-frame depth equals the eval-mode multi-frame depth.
    np.testing.assert_allclose(single["disp"][0], no_pose["disp"][0],
                               atol=1e-6)
    # Train mode updated encoder and pose encoder running statistics.
    for path in (("encoder", "bn1"), ("pose", "encoder", "bn1")):
      new, old = upd["batch_stats"], v["batch_stats"]
      for p in path:
        new, old = new[p], old[p]
      self.assertFalse(np.allclose(new["mean"], old["mean"]), path)

  def test_imnet_encoder_is_frozen(self):
    cfg = common.model_config("tiny", seg_head="none", imnet_encoder=True,
                              pose=False)
    model = joint.from_config(cfg)
    x = _images(t=1, w=32)
    v = H.random_variables(model, x)

    def loss(params):
      out, upd = model.apply({**v, "params": params}, x, (0,), True,
                             mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(0)})
      return jnp.sum((out["features"]["f4"] - out["imnet_f4"])**2), (out, upd)

    grads, (out, upd) = jax.jit(jax.grad(loss, has_aux=True))(v["params"])
    self.assertEqual(out["imnet_f4"].shape, out["features"]["f4"].shape)
    self.assertTrue(all(np.all(g == 0) for g in
                        jax.tree.leaves(grads["imnet_encoder"])))
    self.assertGreater(
        max(np.abs(g).max() for g in jax.tree.leaves(grads["encoder"])), 0)
    # Eval mode: its running statistics are untouched by a train forward.
    for a, b in zip(jax.tree.leaves(upd["batch_stats"]["imnet_encoder"]),
                    jax.tree.leaves(v["batch_stats"]["imnet_encoder"])):
      np.testing.assert_array_equal(a, b)

  def test_bad_offsets(self):
    model = joint.from_config(common.model_config("tiny", seg_head="none"))
    with self.assertRaisesRegex(ValueError, "must contain 0"):
      jax.eval_shape(lambda x: model.init(jax.random.key(0), x, (-2, -1, 1)),
                     _images())


class SegDepthNetTest(parameterized.TestCase):

  @parameterized.parameters("pad", "transfer", "transfer_student")
  def test_heads(self, head):
    model = joint.from_config(common.model_config("tiny", seg_head=head,
                                                  num_classes=7))
    x = _images()
    v = H.random_variables(model, x, frame_offsets=OFFSETS)
    out = jax.jit(lambda v, x: model.apply(v, x, OFFSETS, False))(v, x)
    self.assertEqual(out["semantics"].shape, (2, 32, 64, 7))
    self.assertEqual(out["semantics"].dtype, jnp.float32)
    self.assertEqual(out["disp"][0].shape, (2, 32, 64, 1))
    self.assertEqual(sorted(out["axisangle"]), [-1, 1])
    self.assertEqual("intermediate_semantics" in out, head == "pad")
    params = v["params"]
    if head == "pad":
      self.assertEqual(sorted(params), ["encoder", "pad", "pose"])
    else:
      self.assertEqual(sorted(params), ["depth", "encoder", "pose", "seg_head"])
      self.assertEqual("head_5" in params["seg_head"],
                       head == "transfer_student")
      proj = "project_seg8" if head == "transfer_student" else "project_seg9"
      self.assertEqual(params["seg_head"][proj]["kernel"].shape[:2], (1, 1))

  def test_segmentation_only_batch(self):
    model = joint.from_config(common.model_config("tiny", seg_head="pad"))
    x = _images(t=1)
    shapes = jax.eval_shape(
        lambda: model.apply(H.random_variables(model, x), x, (0,)))
    self.assertNotIn("axisangle", shapes)
    self.assertEqual(shapes["semantics"].shape, (2, 32, 64, 19))

  @parameterized.parameters("sde", "sde_source", "ssl", "transfer", "student")
  def test_real_variants_trace(self, variant):
    # Shapes only (no compile): the full-size configs are consistent.
    model = joint.from_config(common.model_config(variant))
    x = jnp.zeros((1, 3, 64, 64, 3))
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, OFFSETS), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, OFFSETS), v, x)
    self.assertEqual(out["disp"][0].shape, (1, 64, 64, 1))
    if variant == "student":
      self.assertNotIn("pose", v["params"])
      self.assertEqual(v["params"]["encoder"]["layer3_5"]["conv3"]["kernel"]
                       .shape, (1, 1, 256, 1024))
    if variant in ("ssl", "transfer", "student"):
      self.assertEqual(out["semantics"].shape, (1, 64, 64, 19))

  def test_bfloat16_compute_keeps_float32_outputs(self):
    model = joint.from_config(common.model_config("tiny", dtype="bfloat16"))
    x = _images()
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, OFFSETS), x)
    self.assertTrue(all(l.dtype == jnp.float32 for l in jax.tree.leaves(v)))
    out = jax.eval_shape(lambda v, x: model.apply(v, x, OFFSETS), v, x)
    self.assertEqual(out["features"]["f4"].dtype, jnp.bfloat16)
    for key in ("semantics", "intermediate_semantics"):
      self.assertEqual(out[key].dtype, jnp.float32)
    self.assertEqual(out["disp"][0].dtype, jnp.float32)
    self.assertEqual(out["axisangle"][1].dtype, jnp.float32)

  def test_config_errors(self):
    with self.assertRaisesRegex(ValueError, "unknown model variant"):
      common.model_config("huge")
    with self.assertRaisesRegex(ValueError, "unknown model config keys"):
      common.model_config("tiny", encoder="r18")
    model = joint.from_config(common.model_config("tiny", seg_head="fcn"))
    with self.assertRaisesRegex(ValueError, "seg_head must be"):
      jax.eval_shape(lambda x: model.init(jax.random.key(0), x, OFFSETS),
                     _images())


if __name__ == "__main__":
  absltest.main()
