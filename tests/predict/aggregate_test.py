"""aggregate: three seed workdirs -> mean/std computed by hand; final and
best apart; Rel. column; mixed protocols / class sets refused."""

import csv
import math
import os

import numpy as np
from PIL import Image
import pytest

from sdeseg_jax.eval import evaluators
from sdeseg_jax.predict import aggregate

C = 19
NAN_CLASS = 16  # absent in every run: left out of the mean


def _ious(value, bump=()):
  iou = np.full(C, value)
  iou[NAN_CLASS] = np.nan
  for c, v in bump:
    iou[c] = v
  return [None if np.isnan(v) else float(v) for v in iou]


def _record(workdir, step, iou, teacher=None, *, name="segmentation",
            protocol="paper"):
  """What a segmentation evaluator writes: ``eval/<name>/step_<N>.json``."""
  models = {"student": {"iou": iou, "miou": 0.0}}
  if teacher is not None:
    models["teacher"] = {"iou": teacher, "miou": 0.0}
  evaluators.write_record(workdir, name, step,
                          {"protocol": protocol, "models": models})


def _ssda_run(root, name, per_step, teacher_offset=0.01):
  """A run with student and teacher records at each step."""
  d = os.path.join(root, name)
  for step, iou in per_step.items():
    _record(d, step, iou, [None if v is None else v + teacher_offset
                           for v in iou])
  return d


@pytest.fixture
def seeds(tmp_path):
  root = str(tmp_path)
  # Seed mIoUs (final = step 4): 0.40, 0.50, 0.60; seed 1 peaked at step 2.
  _ssda_run(root, "dm_s0", {2: _ious(0.30), 4: _ious(0.40)})
  _ssda_run(root, "dm_s1", {2: _ious(0.70), 4: _ious(0.50)})
  _ssda_run(root, "dm_s2", {2: _ious(0.55), 4: _ious(0.60,
                                                     bump=((0, 0.96),))})
  _ssda_run(root, "full_s0", {4: _ious(0.80)})
  return root


def test_mean_and_std_by_hand(seeds, tmp_path):
  out = str(tmp_path / "table")
  summary = aggregate.aggregate([f"depthmix={seeds}/dm_s*",
                                 f"full={seeds}/full_s*"], out,
                                fully_supervised="full")
  row = {(s["method"], s["model"], s["checkpoint"]): s for s in summary}
  # Seed 2's mIoU: 17 classes at 0.60 and road at 0.96 over 18 classes.
  m2 = (17 * 60 + 96) / 18
  final = [40.0, 50.0, m2]
  mean = sum(final) / 3
  std = math.sqrt(sum((v - mean) ** 2 for v in final) / 3)
  s = row[("depthmix", "student", "final")]
  assert s["seeds"] == 3 and s["steps"] == [4, 4, 4]
  assert s["miou_mean"] == pytest.approx(mean)
  assert s["miou_std"] == pytest.approx(std)
  assert s["class_mean"][0] == pytest.approx((40 + 50 + 96) / 3)
  assert s["class_std"][1] == pytest.approx(np.std([40, 50, 60]))
  assert np.isnan(s["class_mean"][NAN_CLASS])
  # Best: each seed's highest mIoU (seed 1 at step 2), kept apart.
  b = row[("depthmix", "student", "best")]
  assert b["steps"] == [4, 2, 4]
  assert b["miou_mean"] == pytest.approx((40 + 70 + m2) / 3)
  t = row[("depthmix", "teacher", "final")]
  assert t["miou_mean"] == pytest.approx(mean + 1.0)
  # Relative to the fully supervised row (80 mIoU).
  assert s["rel"] == pytest.approx(100 * mean / 80)
  # The files.
  md = open(os.path.join(out, "table.md")).read()
  assert "### Final checkpoint" in md and "### Best checkpoint" in md
  assert f"| depthmix | student | 3 | 62.0 |" in md
  assert f"{mean:.1f} ± {std:.1f} | {100 * mean / 80:.1f} |" in md
  rows = list(csv.DictReader(open(os.path.join(out, "table.csv"))))
  r = [r for r in rows if r["method"] == "depthmix" and
       r["model"] == "student" and r["checkpoint"] == "best"][0]
  assert float(r["miou_mean"]) == pytest.approx((40 + 70 + m2) / 3, abs=1e-4)
  assert r["steps"] == "4/2/4"
  for ckpt in ("final", "best"):
    im = Image.open(os.path.join(out, f"iou_{ckpt}.png"))
    assert im.size[0] > 19 * 20 and im.size[1] > 300


def test_class_subsets(seeds, tmp_path):
  summary = aggregate.aggregate([f"dm={seeds}/dm_s*"], str(tmp_path / "t"),
                                classes="0/1")
  s = [s for s in summary if s["model"] == "student" and
       s["checkpoint"] == "final"][0]
  assert s["miou_mean"] == pytest.approx(((40 + 40) / 2 + (50 + 50) / 2 +
                                          (96 + 60) / 2) / 3)
  assert len(s["class_mean"]) == 2


def test_mixed_protocols_and_class_sets_are_refused(seeds, tmp_path):
  _record(os.path.join(seeds, "dm_full"), 4, _ious(0.5),
          name="segmentation_full", protocol="full")
  with pytest.raises(ValueError, match="dm_full has no 'paper'-protocol"):
    aggregate.aggregate([f"dm={seeds}/dm_*"], str(tmp_path / "t"))
  _ssda_run(seeds, "other_cls", {4: [0.5] * 16})
  with pytest.raises(ValueError, match="mix class sets"):
    aggregate.aggregate([f"dm={seeds}/dm_s*", f"x={seeds}/other_cls"],
                        str(tmp_path / "t"))
  assert aggregate.main([f"{seeds}/nothing*", "--out",
                         str(tmp_path / "t")]) == 2
