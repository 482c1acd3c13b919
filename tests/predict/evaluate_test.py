"""mode=evaluate on the tiny trained run reproduces its in-training
evaluation (same files, same mIoU), and picks the best step."""

import glob
import json
import os

import numpy as np
import pytest

from sdeseg_jax.predict import evaluate
from sdeseg_jax.predict import records
from tests import _fixtures


def _tb_scalars(workdir):
  """``{(step, tag): value}`` of the run's TensorBoard eval scalars."""
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for raw in tf.data.TFRecordDataset(path):
      ev = event_pb2.Event.FromString(raw.numpy())
      for v in ev.summary.value:
        if v.tag.startswith("eval/"):
          out[(ev.step, v.tag[len("eval/"):])] = float(
              tf.make_ndarray(v.tensor)) if v.HasField("tensor") else float(
                  v.simple_value)
  return out


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("eval"))
  config = _fixtures.load_config("evaluate", f"run={tiny_run.workdir},"
                                 "step=all")
  # The run was evaluated with XLA's optimisations off: so is this.
  with _fixtures.cheap_compiles():
    results = evaluate.run(config, out)
  return out, results


def test_same_files_as_the_in_training_evaluation(tiny_run, evaluated):
  out, _ = evaluated
  want = sorted(os.listdir(os.path.join(tiny_run.workdir, "iou_tables")))
  assert sorted(os.listdir(os.path.join(out, "iou_tables"))) == want
  for step in (1, 2):
    name = f"paper_iou_step{step}.md"
    assert (open(os.path.join(out, "iou_tables", name)).read() ==
            open(os.path.join(tiny_run.workdir, "iou_tables", name)).read())


def test_same_miou_as_the_in_training_evaluation(tiny_run, evaluated):
  _, results = evaluated
  logged = _tb_scalars(tiny_run.workdir)
  assert sorted(results) == [1, 2]
  n = 0
  for step, res in results.items():
    for tag in ("paper/student/miou", "paper/teacher/miou"):
      np.testing.assert_allclose(res[tag], logged[(step, tag)], atol=1e-6)
      n += 1
  assert n == 4
  # Its full-precision record is what aggregate and step=best read.
  rec = json.load(open(os.path.join(evaluated[0], "evaluate",
                                    "step_2.json")))
  assert rec["step"] == 2 and rec["mode"] == "ssl"


def test_best_step_is_the_highest_recorded_miou(tiny_run, evaluated):
  recs = [r for r in records.read_records(tiny_run.workdir)
          if r.model == "student"]
  best = max(recs, key=lambda r: r.miou).step
  assert records.best_step(tiny_run.workdir, "student") == best
  assert evaluate.steps_to_evaluate(tiny_run.workdir, "best",
                                    "student") == [best]
  assert evaluate.steps_to_evaluate(tiny_run.workdir, "1/2",
                                    "student") == [1, 2]
  # The evaluate output's own records hold the same mIoUs at full
  # precision (the markdown tables round to 0.1).
  ev = {r.step: r.miou for r in records.read_records(evaluated[0])
        if r.model == "student"}
  for r in recs:
    assert abs(ev[r.step] - r.miou) < 0.05 + 1e-9


def test_refuses_to_write_into_the_run(tiny_run):
  config = _fixtures.load_config("evaluate", f"run={tiny_run.workdir}")
  with pytest.raises(ValueError, match="another --workdir"):
    evaluate.run(config, tiny_run.workdir)
