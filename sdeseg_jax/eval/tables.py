"""Per-class IoU tables laid out like the papers' Tables 2/4/6/8.

One row per method / run, one column per class (short names), and a final
mIoU column; values are IoU x 100 with one decimal. NaN prints as "-".
"""

import os
from typing import Mapping, Optional, Sequence

import numpy as np

from sdeseg_jax.eval import segmentation

SHORT_NAMES = (
    "Road", "S.walk", "Build.", "Wall", "Fence", "Pole", "T.Light", "Sign",
    "Veget.", "Terrain", "Sky", "Person", "Rider", "Car", "Truck", "Bus",
    "Train", "M.bike", "Bike")


def format_iou_table(
    rows: Mapping[str, Sequence[float]],
    class_ids: Optional[Sequence[int]] = None,
    class_names: Sequence[str] = SHORT_NAMES,
    fmt: str = "markdown",
    digits: int = 1,
) -> str:
  """Formats per-class IoUs (fractions in [0, 1]) as a table.

  Args:
    rows: name -> per-class IoU [C] (e.g. `segmentation_scores(..)["iou"]`).
    class_ids: the columns to show (e.g. `segmentation.SYNTHIA_13_CLASSES`);
      the mIoU column is the nanmean over these. None = all classes.
    class_names: names indexed by train id.
    fmt: "markdown" or "plain" (space-aligned text).
    digits: decimals of the x100 values.

  Returns:
    The table as a string ending in a newline.
  """
  if fmt not in ("markdown", "plain"):
    raise ValueError(
        f"format_iou_table: fmt must be 'markdown' or 'plain', got {fmt!r}.")
  if not rows:
    raise ValueError("format_iou_table: `rows` is empty.")
  n = len(next(iter(rows.values())))
  ids = list(range(n)) if class_ids is None else list(class_ids)
  if len(class_names) < n:
    raise ValueError(
        f"format_iou_table: {len(class_names)} class names for {n} classes.")
  header = ["Method"] + [class_names[i] for i in ids] + ["mIoU"]
  body = []
  for name, iou in rows.items():
    iou = np.asarray(iou, np.float64)
    if iou.shape != (n,):
      raise ValueError(
          f"format_iou_table: row {name!r} has shape {iou.shape}, expected "
          f"({n},).")
    vals = list(iou[ids]) + [segmentation.subset_miou(iou, ids)]
    body.append([name] + ["-" if np.isnan(v) else f"{100 * v:.{digits}f}"
                          for v in vals])
  if fmt == "markdown":
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
  else:
    widths = [max(len(r[j]) for r in [header] + body)
              for j in range(len(header))]
    fmt_row = lambda r: "  ".join(
        c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
        for j, c in enumerate(r))
    lines = [fmt_row(header)] + [fmt_row(r) for r in body]
  return "\n".join(lines) + "\n"


def write_iou_table(path: str, rows: Mapping[str, Sequence[float]],
                    **kwargs) -> str:
  """Writes `format_iou_table(rows, **kwargs)` to `path` (dirs created).

  Args:
    path: output file.
    rows: see `format_iou_table`.
    **kwargs: forwarded to `format_iou_table`.

  Returns:
    The table text.
  """
  text = format_iou_table(rows, **kwargs)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  return text
