"""mode=evaluate on the tiny trained run reproduces its in-training
evaluation (same files, same mIoU), and picks the best step."""

import glob
import json
import os

import numpy as np
import pytest

from sdeseg_jax import errors
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


def _files(workdir):
  ev = os.path.join(workdir, "eval")
  return sorted(os.path.relpath(os.path.join(d, f), ev)
                for d, _, fs in os.walk(ev) for f in fs)


def test_same_files_as_the_in_training_evaluation(tiny_run, evaluated):
  out, _ = evaluated
  want = _files(tiny_run.workdir)
  assert "segmentation/step_2.json" in want
  assert _files(out) == want
  for name in want:
    got = open(os.path.join(out, "eval", name)).read()
    ref = open(os.path.join(tiny_run.workdir, "eval", name)).read()
    if name.endswith(".md"):
      assert got == ref, name
    else:
      got, ref = json.loads(got), json.loads(ref)
      assert got["step"] == ref["step"] and got["protocol"] == "paper"
      for model in ("student", "teacher"):
        np.testing.assert_allclose(got["models"][model]["miou"],
                                   ref["models"][model]["miou"], atol=1e-6)
        np.testing.assert_array_equal(got["confusion"], ref["confusion"])


def test_same_miou_as_the_in_training_evaluation(tiny_run, evaluated):
  _, results = evaluated
  logged = _tb_scalars(tiny_run.workdir)
  assert sorted(results) == [1, 2]
  n = 0
  for step, res in results.items():
    for tag in ("segmentation/student/miou", "segmentation/teacher/miou"):
      np.testing.assert_allclose(res[tag], logged[(step, tag)], atol=1e-6)
      n += 1
  assert n == 4


def test_best_step_is_the_highest_recorded_miou(tiny_run, evaluated):
  recs = [r for r in records.read_records(tiny_run.workdir)
          if r.model == "student"]
  best = max(recs, key=lambda r: r.miou).step
  assert records.best_step(tiny_run.workdir, "student") == best
  assert evaluate.steps_to_evaluate(tiny_run.workdir, "best",
                                    "student") == [best]
  assert evaluate.steps_to_evaluate(tiny_run.workdir, "1/2",
                                    "student") == [1, 2]
  # The evaluate output's records are read the same way.
  ev = {r.step: r.miou for r in records.read_records(evaluated[0])
        if r.model == "student"}
  assert sorted(ev) == [1, 2]
  for r in recs:
    assert abs(ev[r.step] - r.miou) < 1e-6


def test_refuses_to_write_into_the_run(tiny_run):
  config = _fixtures.load_config("evaluate", f"run={tiny_run.workdir}")
  with pytest.raises(errors.ConfigError, match="another --workdir"):
    evaluate.run(config, tiny_run.workdir)
