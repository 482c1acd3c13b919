"""Tests of the evaluator plug-ins (eval/evaluators.py)."""

import json
import os
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.eval import evaluators
from sdeseg_jax.utils import sharding


def _shifted_predict(c):
  """A "model" that is a class offset; the image's red channel carries the
  GT, so that predictions are a fixed function of it."""
  def predict(shift, batch):
    gt = jnp.round(batch["color"][:, 0, ..., 0] * 255 / 50).astype(jnp.int32)
    return {"logits": jax.nn.one_hot((gt + shift) % c, c)}
  return predict


class SegmentationEvaluatorTest(absltest.TestCase):

  def test_miou_best_state_and_layout(self):
    rng = np.random.default_rng(6)
    c = 4
    labels = rng.integers(0, c, (3, 4, 8, 8)).astype(np.int32)
    labels[:, :, 0] = 250
    batches = [{"color": np.repeat(np.where(l == 250, 0, l * 50)[:, None,
                                                                 ..., None],
                                   3, -1).astype(np.uint8),
                "label": l} for l in labels]
    workdir = tempfile.mkdtemp()
    mesh = sharding.make_mesh()  # the 4 test devices: batches are split
    ev = evaluators.SegmentationEvaluator(
        _shifted_predict(c), lambda: iter(batches), mesh=mesh,
        workdir=workdir, num_classes=c, class_names=("a", "b", "c", "d"),
        class_subsets=(("miou2", (0, 1)),), fully_supervised_miou=50.0)
    res = ev.evaluate({"student": 0, "teacher": 1}, step=5)
    self.assertAlmostEqual(res["student/miou"], 100.0)
    self.assertAlmostEqual(res["student/miou2"], 100.0)
    self.assertAlmostEqual(res["student/miou_rel"], 200.0)
    self.assertAlmostEqual(res["teacher/miou"], 0.0)
    self.assertAlmostEqual(res["student/iou/c"], 1.0)
    conf = np.zeros((c, c))
    for l in labels.reshape(-1):
      if l != 250:
        conf[l, (l + 1) % c] += 1
    np.testing.assert_array_equal(ev.confusions({"t": 1})["t"], conf)
    res2 = ev.evaluate({"student": 1, "teacher": 0}, step=6)
    # Best-so-far is kept apart from the latest value.
    self.assertAlmostEqual(res2["student/miou"], 0.0)
    self.assertAlmostEqual(res2["student/best_miou"], 100.0)
    self.assertEqual(ev.best_step, {"student": 5, "teacher": 6})
    out = os.path.join(workdir, "eval", "segmentation")
    self.assertEqual(sorted(os.listdir(out)),
                     ["latest.json", "step_5.json", "step_5.md",
                      "step_6.json", "step_6.md"])
    rec = json.load(open(os.path.join(out, "latest.json")))
    self.assertEqual(rec["step"], 6)
    self.assertAlmostEqual(rec["miou"], 0.0)
    self.assertAlmostEqual(rec["miou_teacher"], 100.0)
    self.assertAlmostEqual(rec["best_miou"], 100.0)
    self.assertEqual(rec["best_step"], 5)
    self.assertLen(rec["iou"], c)
    self.assertEqual(rec, evaluators.read_latest(workdir, "segmentation"))
    text = open(os.path.join(out, "step_6.md")).read()
    self.assertIn("| student (step 6) | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |",
                  text)
    # The state (what the checkpoint keeps) carries the best so far over.
    fresh = evaluators.SegmentationEvaluator(
        _shifted_predict(c), lambda: iter(batches), num_classes=c)
    fresh.set_state(json.loads(json.dumps(ev.get_state())))
    res3 = fresh.evaluate({"student": 1}, step=7)
    self.assertAlmostEqual(res3["student/best_miou"], 100.0)
    self.assertEqual(res3["student/best_step"], 5)
    panels = ev.images({"student": 0, "teacher": 1}, num=2)["predictions"]
    self.assertEqual(panels.shape, (2, 8, 4 * 8, 3))

  def test_full_protocol_resizes_input_and_upsamples_logits(self):
    seen = {}

    def predict(_, batch):
      seen["shape"] = batch["color"].shape
      return {"logits": jnp.zeros(batch["color"].shape[:1] + (8, 16, 3))
                        .at[..., 1].set(1.0)}

    labels = np.ones((1, 16, 32), np.int32)
    ev = evaluators.SegmentationEvaluator(
        predict, lambda: iter([{"color": np.zeros((1, 1, 16, 32, 3),
                                                  np.uint8),
                                "label": labels}]),
        num_classes=3, protocol="full", input_size=(8, 16))
    res = ev.evaluate({"m": 0}, step=1)
    self.assertEqual(seen["shape"], (1, 1, 8, 16, 3))
    self.assertAlmostEqual(res["m/miou"], 100.0)
    with self.assertRaisesRegex(ValueError, "input_size"):
      evaluators.SegmentationEvaluator(predict, list, protocol="full")
    with self.assertRaisesRegex(ValueError, "unknown evaluator 'iou'"):
      evaluators.build("iou", predict, list)


class DepthEvaluatorTest(absltest.TestCase):

  def test_metrics_of_each_model_and_record(self):
    depth = np.broadcast_to(np.linspace(5.0, 40.0, 64, dtype=np.float32)
                            .reshape(8, 8), (4, 8, 8)).copy()
    batch = {"color": np.zeros((4, 1, 8, 8, 3), np.uint8), "depth": depth,
             "index": np.array([0, 1, 2, -1])}
    # The sigmoid disparity that disp_to_depth (0.1..100 m) maps to depth.
    exact = (1.0 / depth - 0.01) / 9.99

    def predict(power, b):
      # Model 1: exact; model 2 distorts the second image non-linearly,
      # which median scaling cannot undo.
      p = jnp.where(jnp.arange(4) == 1, power, 1.0)[:, None, None]
      return {"disp": (jnp.asarray(exact) ** p)[..., None] +
                      0 * b["color"][:, 0, ..., :1]}

    workdir = tempfile.mkdtemp()
    ev = evaluators.DepthEvaluator(
        predict, lambda: iter([batch]), mesh=sharding.make_mesh(),
        workdir=workdir, min_depth=0.1, max_depth=100.0)
    res = ev.evaluate({"exact": 1.0, "off": 2.0}, step=3)
    self.assertAlmostEqual(res["exact/abs_rel"], 0.0, places=5)
    self.assertGreater(res["off/abs_rel"], 0.1)
    rec = evaluators.read_latest(workdir, "depth")
    self.assertEqual(rec["step"], 3)
    self.assertAlmostEqual(rec["models"]["off"]["abs_rel"],
                           res["off/abs_rel"], places=6)


if __name__ == "__main__":
  absltest.main()
