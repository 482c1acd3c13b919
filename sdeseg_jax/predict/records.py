"""The segmentation evaluation records a run wrote, in one form.

Every evaluation of a segmentation evaluator (in training and in
``mode=evaluate``, ``eval.evaluators.SegmentationEvaluator``) writes
``<workdir>/eval/<evaluator>/step_<N>.json`` with its ``protocol`` and
per-model entries ``{"models": {"student": {"iou": [...]}, ...}}``; this
module reads them back as ``Record``s (the protocol: the record's, else
the evaluator's folder name). Records without IoUs (the depth evaluator's)
are left out.

IoUs are fractions in [0, 1], NaN where a class is absent from both ground
truth and prediction (left out of the mean, as ``segmentation_scores``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import segmentation

_STEP_JSON = re.compile(r"^step_(\d+)\.json$")


@dataclasses.dataclass(frozen=True)
class Record:
  """One model's per-class IoU at one evaluation.

  Attributes:
    step: training step of the evaluated state.
    protocol: ``paper`` (1024x512), ``full`` (full resolution) or the name
      of the evaluator that wrote it.
    model: ``student`` or ``teacher``.
    iou: float64 [C] fractions (NaN = class absent).
    class_names: the C column names.
    path: the file it was read from.
  """
  step: int
  protocol: str
  model: str
  iou: np.ndarray
  class_names: tuple[str, ...]
  path: str

  @property
  def miou(self) -> float:
    """mIoU in percent over all C classes."""
    return 100.0 * segmentation.subset_miou(self.iou, range(len(self.iou)))


def default_class_names(n: int) -> tuple[str, ...]:
  if n == len(labels_lib.CLASS_NAMES):
    return tuple(labels_lib.CLASS_NAMES)
  return tuple(str(i) for i in range(n))


def _iou(values, path: str) -> np.ndarray:
  try:
    return np.asarray([np.nan if v is None else float(v) for v in values],
                      np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: IoU entries must be numbers ({e})") from e


def _json_records(path: str, protocol: str) -> list[Record]:
  with open(path) as f:
    rec = json.load(f)
  step = int(rec["step"]) if "step" in rec else int(
      _STEP_JSON.match(os.path.basename(path)).group(1))
  protocol = rec.get("protocol") or protocol
  names = rec.get("class_names")
  res = []
  for model, value in rec.get("models", {}).items():
    if isinstance(value, dict) and "iou" in value:
      iou = _iou(value["iou"], path)
      cn = tuple(names) if names else default_class_names(len(iou))
      res.append(Record(step, protocol, model, iou, cn, path))
  return res


def read_records(workdir: str) -> list[Record]:
  """Every evaluation record of ``workdir``, sorted by (protocol, model,
  step)."""
  out = []
  for path in glob.glob(os.path.join(workdir, "eval", "*", "step_*.json")):
    out += _json_records(path, os.path.basename(os.path.dirname(path)))
  return sorted(out, key=lambda r: (r.protocol, r.model, r.step))


def best_step(workdir: str, model: str = "student",
              protocol: str | None = None) -> int | None:
  """The step whose record of ``model`` has the highest mIoU (None if no
  record). ``protocol`` None: ``paper`` if recorded, else the first."""
  recs = [r for r in read_records(workdir) if r.model == model]
  if not recs:
    return None
  protos = sorted({r.protocol for r in recs})
  protocol = protocol or ("paper" if "paper" in protos else protos[0])
  recs = [r for r in recs if r.protocol == protocol]
  finite = [r for r in recs if np.isfinite(r.miou)]
  if not finite:
    return None
  return max(finite, key=lambda r: (r.miou, -r.step)).step
