"""A short human-readable report of a run: tables and a few images.

``write_report`` turns the JSON outputs of the stages (the records of the
segmentation evaluator, ``eval/evaluators.py``, and depth metrics) into
``<workdir>/report.md`` with PNG panels next to it:

* a per-class IoU table (student and teacher) like the papers' Tables 12/14;
* with ``baselines``: the method beside them, per class, with the
  differences (``comparison_table``);
* the depth metrics of each SDE (median-scaled, monodepth2 protocol) and
  an error budget (``eval.depth.format_breakdown``);
* prediction panels (image | prediction(s) | ground truth);
* DepthMix panels (target | source | cross-domain mix | target-domain mix
  and their masks).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import tables


def _u8(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _mask_rgb(m: np.ndarray) -> np.ndarray:
  return np.repeat(_u8(np.asarray(m, np.float32))[..., None], 3, axis=-1)


def prediction_panels(images: np.ndarray,
                      pred: np.ndarray | Sequence[np.ndarray],
                      label: np.ndarray, num: int = 4) -> np.ndarray:
  """Rows of image | prediction(s) | ground truth (Cityscapes colours).

  Args:
    images: [B, H, W, 3] uint8 (or float in [0, 1]).
    pred: [B, H, W] int train ids, or a sequence of K such arrays (one
      tile each, in order).
    label: [B, H, W] int train ids, 250 = ignore (black).
    num: at most this many rows.

  Returns:
    [N, H, (K + 2) W, 3] uint8.
  """
  preds = [pred] if isinstance(pred, np.ndarray) and pred.ndim == 3 else (
      list(pred))
  n = min(num, len(images))
  rows = [np.concatenate([_u8(images[i])] +
                         [labels_lib.colorize_train_ids(p[i]) for p in preds]
                         + [labels_lib.colorize_train_ids(label[i])], axis=1)
          for i in range(n)]
  return np.stack(rows)


def mix_panels(target: np.ndarray, source: np.ndarray, cdm: np.ndarray,
               cdm_mask: np.ndarray, tdm: np.ndarray, tdm_mask: np.ndarray,
               num: int = 2) -> np.ndarray:
  """Rows of target | source | CDM mix | CDM mask | TDM mix | TDM mask.

  Args:
    target, source, cdm, tdm: [B, H, W, 3] images (uint8 or float).
    cdm_mask, tdm_mask: [B, H, W] masks in {0, 1} (1 = first image kept).
    num: at most this many rows.

  Returns:
    [N, H, 6W, 3] uint8.
  """
  n = min(num, len(target))
  rows = [np.concatenate([_u8(target[i]), _u8(source[i]), _u8(cdm[i]),
                          _mask_rgb(cdm_mask[i]), _u8(tdm[i]),
                          _mask_rgb(tdm_mask[i])], axis=1)
          for i in range(n)]
  return np.stack(rows)


def save_png(path: str, panels: np.ndarray, scale: int = 1) -> str:
  """Stacks ``[N, H, W, 3]`` rows vertically into one PNG, each pixel
  repeated ``scale`` times along both axes (nearest neighbour, so label
  colours stay exact); returns path."""
  if scale < 1:
    raise ValueError(f"save_png: scale={scale}; need an integer >= 1")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  img = np.concatenate(list(panels), axis=0)
  img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
  Image.fromarray(img).save(path)
  return path


def _fmt(v: Any) -> str:
  if v is None or (isinstance(v, float) and np.isnan(v)):
    return "-"
  return f"{v:.3f}" if isinstance(v, float) else str(v)


def metrics_table(rows: Mapping[str, Mapping[str, Any]],
                  columns: Sequence[str]) -> str:
  """Markdown table: one row per name, the given metric columns."""
  lines = ["| | " + " | ".join(columns) + " |",
           "|---|" + "---:|" * len(columns)]
  for name, m in rows.items():
    lines.append(f"| {name} | " + " | ".join(_fmt(m.get(c)) for c in columns)
                 + " |")
  return "\n".join(lines) + "\n"


def _iou(m: Mapping[str, Any]) -> np.ndarray:
  return np.array([np.nan if v is None else v for v in m["iou"]],
                  np.float64)


def _delta(v: float) -> str:
  return "-" if np.isnan(v) else f"{v:+.1f}"


def comparison_table(seg: Mapping[str, Mapping[str, Any]],
                     baselines: Sequence[str],
                     class_names: Sequence[str] = tables.SHORT_NAMES
                     ) -> str:
  """The last run of ``seg`` beside the others, one row per class.

  Columns: each run's student IoU (%), then the last run minus each of
  ``baselines`` (IoU points). The final row is the mIoU (the records'
  ``miou``). A class that a run leaves undefined (absent from the split
  and never predicted) prints "-".

  Args:
    seg: ``{run name: eval record}`` (``iou`` per class, ``miou``); the
      last entry is the method.
    baselines: names in ``seg`` to compare the method with.
    class_names: row names, indexed by train id.

  Returns:
    A markdown table.
  """
  names = list(seg)
  method = names[-1]
  missing = [b for b in baselines if b not in seg or b == method]
  if missing:
    raise ValueError(f"comparison_table: baselines {missing} are not runs "
                     f"before the method {method!r} in {names}")
  ious = {k: _iou(m) for k, m in seg.items()}
  cols = names + [f"Δ vs {b}" for b in baselines]
  lines = ["| class | " + " | ".join(cols) + " |",
           "|---|" + "---:|" * len(cols)]
  def row(label, vals, deltas):
    cells = ["-" if np.isnan(v) else f"{v:.1f}" for v in vals]
    lines.append(f"| {label} | " + " | ".join(
        cells + [_delta(d) for d in deltas]) + " |")
  for c in range(len(ious[method])):
    vals = [100 * ious[k][c] for k in names]
    row(class_names[c], vals,
        [100 * (ious[method][c] - ious[b][c]) for b in baselines])
  miou = {k: float(m["miou"]) for k, m in seg.items()}
  row("**mIoU**", [miou[k] for k in names],
      [miou[method] - miou[b] for b in baselines])
  return "\n".join(lines) + "\n"


def write_report(workdir: str, *, title: str,
                 seg: Mapping[str, Mapping[str, Any]],
                 baselines: Sequence[str] = (),
                 depth: Mapping[str, Mapping[str, Any]] | None = None,
                 depth_budget: str = "",
                 images: Mapping[str, str] | None = None,
                 notes: Sequence[str] = (),
                 class_ids: Sequence[int] | None = None) -> str:
  """Writes ``<workdir>/report.md``; returns its text.

  Args:
    workdir: output folder.
    title: heading.
    seg: ``{run name: eval record}`` with ``miou``, ``miou_teacher``,
      ``iou`` and ``iou_teacher`` (per-class fractions; None = NaN), as
      written by ``eval.evaluators.SegmentationEvaluator``.
    baselines: runs of ``seg`` to compare its last run (the method) with:
      adds ``Δ mIoU vs <baseline>`` columns to the mIoU table and the
      per-class ``comparison_table``.
    depth: ``{SDE name: depth metrics}`` (``abs_rel``, ``a1``, ...).
    depth_budget: markdown of an error budget
      (``eval.depth.format_breakdown``), put after the depth metrics.
    images: ``{caption: PNG path}`` (made relative to ``workdir``).
    notes: extra lines (timings, settings).
    class_ids: columns of the IoU table (None = all classes).

  Returns:
    The markdown text.
  """
  out = [f"# {title}", ""]
  if seg:
    out += ["## Segmentation (target val)", ""]
    cols = [c for c in ("miou", "miou_teacher", "miou16", "miou13",
                        "miou_rel", "pixel_acc")
            if any(c in m for m in seg.values())]
    table = {k: dict(m) for k, m in seg.items()}
    if baselines:
      method = list(seg)[-1]
      for b in baselines:
        col = f"Δ mIoU vs {b}"
        cols.append(col)
        for k, m in table.items():
          m[col] = (_delta(seg[method]["miou"] - seg[b]["miou"])
                    if k == method else None)
    out.append(metrics_table(table, cols))
    if baselines:
      out += [f"{list(seg)[-1]} beside the baselines, student IoU (%) per "
              "class and the differences (IoU points):", "",
              comparison_table(seg, baselines)]
    rows = {}
    for name, m in seg.items():
      for key, suffix in (("iou", "student"), ("iou_teacher", "teacher")):
        if m.get(key) is not None:
          rows[f"{name} ({suffix})"] = np.array(
              [np.nan if v is None else v for v in m[key]], np.float64)
    if rows:
      out += ["Per-class IoU (%):", "",
              tables.format_iou_table(rows, class_ids=class_ids)]
  if depth:
    out += ["## Self-supervised depth (median-scaled)", ""]
    out.append(metrics_table(depth, [c for c in (
        "abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
                                     if any(c in m for m in depth.values())]))
  if depth_budget:
    out += [depth_budget, ""]
  for caption, path in (images or {}).items():
    out += [f"### {caption}", "",
            f"![{caption}]({os.path.relpath(path, workdir)})", ""]
  if notes:
    out += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
  text = "\n".join(out)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
  return text
