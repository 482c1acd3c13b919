"""The segmentation evaluation records a run wrote, in one form.

Training (and ``mode=evaluate``) writes per-class IoUs of every evaluation;
this module reads them back as ``Record``s, whatever evaluator wrote them:

* ``<workdir>/eval/step_<N>.json`` (SSDA: ``iou``, ``iou_teacher`` lists,
  protocol ``paper``) and ``<workdir>/eval/<evaluator>/step_<N>.json``
  (protocol = the record's ``protocol``, else the evaluator's folder name;
  per-model ``{"models": {"student": {"iou": [...]}, ...}}`` entries, or
  ``iou`` / ``iou_<model>`` lists);
* ``<workdir>/iou_tables/<protocol>_iou_step<N>.md`` (SSL: one row per
  model, IoU x 100 with one decimal, ``-`` = NaN).

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
_STEP_MD = re.compile(r"^(?:(\w+?)_)?iou_step(\d+)\.md$")


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
  out = {}
  models = rec.get("models", rec)
  for name, value in models.items():
    if isinstance(value, dict) and "iou" in value:
      out[name] = _iou(value["iou"], path)
  if "iou" in rec and isinstance(rec["iou"], list):
    out["student"] = _iou(rec["iou"], path)
  for k, v in rec.items():
    if k.startswith("iou_") and isinstance(v, list):
      out[k[len("iou_"):]] = _iou(v, path)
  res = []
  for model, iou in out.items():
    cn = tuple(names) if names else default_class_names(len(iou))
    res.append(Record(step, protocol, model, iou, cn, path))
  return res


def _md_records(path: str, protocol: str, step: int) -> list[Record]:
  lines = [l.strip() for l in open(path) if l.strip().startswith("|")]
  if len(lines) < 3:
    raise ValueError(f"{path}: not a per-class IoU table")
  cells = lambda l: [c.strip() for c in l.strip("|").split("|")]
  header = cells(lines[0])
  if header[-1] != "mIoU":
    raise ValueError(f"{path}: the last column is {header[-1]!r}, not mIoU")
  names = tuple(header[1:-1])
  res = []
  for line in lines[2:]:
    row = cells(line)
    vals = [np.nan if v == "-" else float(v) / 100.0 for v in row[1:-1]]
    res.append(Record(step, protocol, row[0], np.asarray(vals, np.float64),
                      names, path))
  return res


def _scalar_records(path: str) -> list[Record]:
  """``mode=evaluate``'s ``evaluate/step_<N>.json``: scalars named
  ``<protocol>/<model>/iou/<class>`` (full precision)."""
  with open(path) as f:
    rec = json.load(f)
  per: dict[tuple[str, str], dict[str, float]] = {}
  for k, v in rec.get("scalars", {}).items():
    parts = k.split("/")
    if len(parts) == 4 and parts[2] == "iou":
      per.setdefault((parts[0], parts[1]), {})[parts[3]] = v
  return [Record(int(rec["step"]), proto, model,
                 _iou(list(ious.values()), path), tuple(ious), path)
          for (proto, model), ious in per.items()]


def read_records(workdir: str) -> list[Record]:
  """Every evaluation record of ``workdir``, sorted by (protocol, model,
  step); one per (protocol, model, step), JSON preferred over the rounded
  markdown tables. Tables of the best-so-far or final model
  (``iou_best_*``, ``iou_final``) repeat a step's record and are not
  read."""
  out = []
  ev = os.path.join(workdir, "eval")
  for path in glob.glob(os.path.join(ev, "step_*.json")):
    out += _json_records(path, "paper")
  for path in glob.glob(os.path.join(ev, "*", "step_*.json")):
    out += _json_records(path, os.path.basename(os.path.dirname(path)))
  for path in glob.glob(os.path.join(workdir, "evaluate", "step_*.json")):
    out += _scalar_records(path)
  for path in glob.glob(os.path.join(workdir, "iou_tables", "*.md")):
    m = _STEP_MD.match(os.path.basename(path))
    if m:
      out += _md_records(path, m.group(1) or "paper", int(m.group(2)))
  unique = {}
  for r in out:  # the first source of each record wins
    unique.setdefault((r.protocol, r.model, r.step), r)
  return sorted(unique.values(), key=lambda r: (r.protocol, r.model, r.step))


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
