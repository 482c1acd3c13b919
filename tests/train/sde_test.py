"""Tests of the SDE task on a tiny model and a generated MiniCity sequence."""

import os
import sys
import tempfile

from absl.testing import absltest
import jax
import ml_collections as mlc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import sde_minicity  # noqa: E402
from sdeseg_jax.data import minicity  # noqa: E402
from sdeseg_jax.data import pipeline  # noqa: E402
from sdeseg_jax.train import checkpoint as ckpt_lib  # noqa: E402
from sdeseg_jax.train import sde  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding  # noqa: E402
from tests import _fixtures  # noqa: E402

_CACHE = {}


def tiny_config(**model):
  config = sde_minicity.get_config("runlocal")
  config.model.update(dict(encoder_depth=10, width=8, pose_depth=10))
  config.model.update(model)
  config.optim.update(lr=2e-3, schedule="constant")
  return config


def one_sequence_batch():
  """A batch of 4 copies of one MiniCity sequence (32x64, frames -1,0,1)."""
  if "batch" not in _CACHE:
    root = tempfile.mkdtemp()
    data = os.path.join(root, "mc")
    minicity.generate(data, "cityscapes", 0, width=64, height=32,
                      num_train_sequences=2, num_val_sequences=1, log=None)
    config = tiny_config()
    stream = mlc.ConfigDict(config.data.val.to_dict())
    stream.path = data
    loader = pipeline.make_loader(
        stream, split="train", global_batch_size=4, seed=0, train=False,
        data_dir=os.path.join(root, "tfds"))
    b = next(iter(loader))
    loader.close()
    _CACHE["batch"] = jax.tree.map(
        lambda x: np.repeat(np.asarray(x)[:1], 4, axis=0), b)
  return _CACHE["batch"]


def _state_and_step(config, batch):
  # One device: the multi-device path is covered by engine_test; compiling
  # the SDE step for 1 device is quicker.
  mesh = sharding.make_mesh(jax.devices()[:1])
  task = sde.SDETask(config)
  create = trainer.create_state_fn(task, config,
                                   trainer.abstract_batch(batch))
  shapes = jax.eval_shape(create)
  state = jax.jit(create, out_shardings=step_lib.state_sharding(
      shapes, mesh))()
  return state, step_lib.jit_train_step(task, config, mesh, shapes), mesh


class SDETaskTest(absltest.TestCase):

  def test_overfits_one_sequence_and_keeps_imagenet_copy_frozen(self):
    # Compiling the state init and the step dominates this test on a CPU;
    # unoptimised XLA code compiles ~3x faster and its 40 tiny steps cost
    # less than that saves (measured: 44 s -> 22 s). The loss falls as far
    # either way (last/first ~0.59 against the 0.8 asserted).
    self.enter_context(_fixtures.cheap_compiles())
    batch = one_sequence_batch()
    self.assertEqual(batch["color"].shape, (4, 3, 32, 64, 3))
    config = tiny_config(imnet_encoder=True)
    config.loss.feature_distance_weight = 1e-4
    config.optim.groups = (("imnet_encoder/.*", "frozen"),)
    # Two loss scales keep the compile short; the 4-scale loss itself is
    # tested in tests/losses.
    config.loss.scales = (0, 1)
    state, jstep, mesh = _state_and_step(config, batch)
    before = jax.device_get(state.params)
    gbatch = sharding.host_to_global(batch, mesh)
    losses = []
    for i in range(40):
      state, m = jstep(state, gbatch)
      losses.append(float(m["sde_loss"]))
      if i == 0:
        self.assertGreater(float(m["feature_distance"]), 0.0)
        np.testing.assert_allclose(
            float(m["loss"]),
            float(m["sde_loss"]) + 1e-4 * float(m["feature_distance"]),
            rtol=1e-5)
    self.assertTrue(np.isfinite(losses).all())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    # The photometric error of the warped neighbours must fall well below
    # its start once depth and pose fit this one sequence.
    self.assertLess(last, 0.8 * first, f"losses {losses[::8]}")
    after = jax.device_get(state.params)
    jax.tree.map(np.testing.assert_array_equal, after["imnet_encoder"],
                 before["imnet_encoder"])
    self.assertFalse(np.array_equal(after["encoder"]["conv1"]["kernel"],
                                    before["encoder"]["conv1"]["kernel"]))

  def test_init_from_an_earlier_run_copies_only_matching_patterns(self):
    batch = one_sequence_batch()
    config = tiny_config()
    task = sde.SDETask(config)
    shapes = jax.eval_shape(trainer.create_state_fn(
        task, config, trainer.abstract_batch(batch)))
    rs = np.random.RandomState(0)
    rand = lambda tree: jax.tree.map(
        lambda s: rs.normal(size=s.shape).astype(s.dtype), tree)
    prev = {"params": rand(shapes.params),
            "batch_stats": rand(shapes.batch_stats)}
    workdir = tempfile.mkdtemp()
    ckpt = ckpt_lib.Checkpointer(workdir)
    ckpt.save(7, prev, None, config)
    ckpt.wait()
    ckpt.close()
    fresh = {"params": rand(shapes.params),
             "batch_stats": rand(shapes.batch_stats)}
    config.init.checkpoint = workdir
    config.init.patterns = ("pose/.*",)
    params, stats = sde.SDETask(config).load_pretrained(
        fresh["params"], fresh["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, params["pose"],
                 prev["params"]["pose"])
    jax.tree.map(np.testing.assert_array_equal, stats["pose"],
                 prev["batch_stats"]["pose"])
    jax.tree.map(np.testing.assert_array_equal, params["encoder"],
                 fresh["params"]["encoder"])
    jax.tree.map(np.testing.assert_array_equal, params["depth"],
                 fresh["params"]["depth"])
    config.init.patterns = ("posee/.*",)
    with self.assertRaisesRegex(ValueError, "'posee/.\\*' matches no"):
      sde.SDETask(config).load_pretrained(fresh["params"],
                                          fresh["batch_stats"])


if __name__ == "__main__":
  absltest.main()
