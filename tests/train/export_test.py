"""Round trip: export_depth writes PNGs that the data pipeline loads back."""

import json
import os
import sys
import tempfile
from unittest import mock

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
from sdeseg_jax.train import export  # noqa: E402
from sdeseg_jax.train import sde  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402


class ExportTest(absltest.TestCase):

  def test_encode_matches_reference_quantisation(self):
    d = np.array([[0.2, 0.6], [1.0, 0.4]])
    np.testing.assert_array_equal(export.encode(d, "u8", True),
                                  [[0, 127], [255, 63]])
    u16 = export.encode(d, "u16", False)
    self.assertEqual(u16.dtype, np.uint16)
    np.testing.assert_array_equal(u16, np.floor(d * 65535))
    self.assertEqual(export.pseudo_depth_relpath(
        "leftImg8bit_small/train/a/a_1_leftImg8bit.jpg"),
                     "leftImg8bit/train/a/a_1_leftImg8bit.png")
    with self.assertRaisesRegex(ValueError, "config.export.encoding='f32'"):
      export.encode(d, "f32", True)

  def test_export_then_pipeline_loads_the_same_values(self):
    workdir = tempfile.mkdtemp()
    data = os.path.join(workdir, "mc")
    minicity.generate(data, "cityscapes", 0, width=64, height=32,
                      num_train_sequences=2, num_val_sequences=1, log=None)
    config = sde_minicity.get_config("runlocal")
    config.model.update(encoder_depth=10, width=8, pose_depth=10)
    config.data.val.path = data
    config.export.batch_size = 4
    # A checkpoint with random weights stands in for a trained run.
    task = sde.SDETask(config)
    ex = {"color_aug": jax.ShapeDtypeStruct((4, 3, 32, 64, 3), np.uint8)}
    shapes = jax.eval_shape(trainer.create_state_fn(task, config, ex))
    rs = np.random.RandomState(0)
    rand = lambda t: jax.tree.map(
        lambda s: (0.1 * rs.normal(size=s.shape)).astype(s.dtype), t)
    ckpt = ckpt_lib.Checkpointer(workdir)
    ones = jax.tree.map(lambda s: np.ones(s.shape, s.dtype),
                        shapes.batch_stats)
    ckpt.save(5, {"params": rand(shapes.params), "batch_stats": ones},
              None, config)
    ckpt.wait()
    ckpt.close()

    recorded = {}
    original = export.make_predict

    def recording_make_predict(model_cfg, mesh):
      fn = original(model_cfg, mesh)
      def predict(variables, color, center):
        out = fn(variables, color, center)
        recorded.setdefault("out", []).append(np.asarray(out))
        return out
      return predict

    with mock.patch.object(export, "make_predict", recording_make_predict):
      index = export.run(config, workdir)
    self.assertEqual(index["step"], 5)
    self.assertEqual(index["counts"], {"train": 2, "val": 1})
    with open(os.path.join(workdir, "pseudo_depth", "index.json")) as f:
      self.assertEqual(json.load(f)["encoding"], "u16")

    # Read the val split back through the data pipeline.
    stream = mlc.ConfigDict(config.data.val.to_dict())
    stream.pseudo_depth_dir = os.path.join(workdir, "pseudo_depth")
    stream.pseudo_depth_encoding = "u16"
    loader = pipeline.make_loader(
        stream, split="val", global_batch_size=4, seed=0, train=False,
        data_dir=os.path.join(workdir, "tfds"))
    batch = next(iter(loader))
    loader.close()
    # The val split was exported last: its predictions are the last call.
    disp = recorded["out"][-1]
    valid = np.asarray(batch["index"]) >= 0
    self.assertEqual(int(valid.sum()), 1)
    loaded = np.asarray(batch["pseudo_depth"])[valid]
    expected = export.decode(export.encode(disp[valid][0], "u16", True),
                             "u16")
    self.assertEqual(loaded.shape, (1, 32, 64))
    np.testing.assert_allclose(loaded[0], expected, atol=1e-7)
    # Normalised: the image spans [0, 1] and is not constant.
    self.assertAlmostEqual(float(loaded.min()), 0.0)
    self.assertAlmostEqual(float(loaded.max()), 1.0)


if __name__ == "__main__":
  absltest.main()
