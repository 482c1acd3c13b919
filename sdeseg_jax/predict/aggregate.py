r"""Seed runs -> the papers' result table (mean +- std over seeds).

  python -m sdeseg_jax.predict.aggregate --out=TABLE \
      'baseline=/runs/ssl_base_seed*' 'depthmix=/runs/ssl_dm_seed*' \
      --fully_supervised=full

Each positional argument is a table row ``NAME=GLOB`` (or just ``GLOB``,
named after it): the workdirs of one method trained with different seeds
(training runs or ``mode=evaluate`` outputs; ``records.read_records`` lists
what is read). For every row, model (student, EMA teacher) and checkpoint
(``final``: each run's last evaluation; ``best``: each run's evaluation
with the highest mIoU of that model) the table gives the per-class IoU
averaged over seeds and the mIoU as mean +- std over seeds (population std,
``ddof=0``, as ``benchmarks/``), and ``Rel.``: 100 x mIoU / the mIoU of the
fully supervised reference (``--fully_supervised``: a row name, whose
final student mean is used, or a number in percent). Final and best are
kept apart, never mixed.

``--protocol`` chooses the records (``paper`` by default when present) and
``--classes`` the class set of the mIoU (``all``, ``synthia16``,
``synthia13`` or train ids separated by ``/``). Runs whose records are of
another protocol or another class list are refused with the run named,
not averaged.

Writes ``TABLE/table.md``, ``TABLE/table.csv`` (also per-class std, steps,
seed count) and ``TABLE/iou_{final,best}.png`` (a bar plot per class: one
bar per row and model, whiskers = std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import os
import sys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import segmentation
from sdeseg_jax.eval import tables
from sdeseg_jax.predict import records as records_lib

CHECKPOINTS = ("final", "best")
CLASS_SETS = {"synthia16": tuple(labels_lib.SYNTHIA_16_TRAIN_IDS),
              "synthia13": tuple(labels_lib.SYNTHIA_13_TRAIN_IDS)}


@dataclasses.dataclass
class Row:
  """One table row: a method's model at one kind of checkpoint."""
  method: str
  model: str
  checkpoint: str
  runs: list[str]
  steps: list[int]
  iou: np.ndarray  # [seeds, C] fractions

  def per_seed_miou(self, ids: Sequence[int]) -> np.ndarray:
    return np.asarray([100 * segmentation.subset_miou(i, ids)
                       for i in self.iou])


def parse_rows(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
  """``NAME=GLOB`` / ``GLOB`` -> ``[(name, sorted workdirs)]``."""
  out = []
  for spec in specs:
    name, sep, pattern = spec.partition("=")
    if not sep:
      name, pattern = os.path.basename(os.path.normpath(spec)), spec
    dirs = sorted(d for d in glob.glob(os.path.expanduser(pattern))
                  if os.path.isdir(d))
    if not dirs:
      raise FileNotFoundError(f"row {name!r}: {pattern!r} matches no folder")
    out.append((name, dirs))
  return out


def pick_protocol(recs_by_run: dict[str, list], protocol: str | None) -> str:
  protos = {r.protocol for recs in recs_by_run.values() for r in recs}
  if protocol:
    return protocol
  if "paper" in protos:
    return "paper"
  if len(protos) == 1:
    return protos.pop()
  raise ValueError(f"the runs hold records of protocols {sorted(protos)}; "
                   "choose one with --protocol")


def collect(rows: Sequence[tuple[str, list[str]]], protocol: str | None
            ) -> tuple[list[Row], str, tuple[str, ...]]:
  """Reads every run; returns the table rows, the protocol and class names.

  Raises:
    ValueError: a run without records of the protocol, or whose class list
      differs from the first run's (both named).
  """
  recs_by_run = {d: records_lib.read_records(d) for _, ds in rows for d in ds}
  for d, recs in recs_by_run.items():
    if not recs:
      raise ValueError(f"{d} holds no evaluation records "
                       "(eval/<evaluator>/step_<N>.json); run mode=evaluate "
                       "on it first")
  proto = pick_protocol(recs_by_run, protocol)
  names, first = None, None
  out = []
  for method, dirs in rows:
    per = {(m, c): ([], [], []) for m in ("student", "teacher")
           for c in CHECKPOINTS}
    for d in dirs:
      recs = [r for r in recs_by_run[d] if r.protocol == proto]
      if not recs:
        others = sorted({r.protocol for r in recs_by_run[d]})
        raise ValueError(
            f"row {method!r}: {d} has no {proto!r}-protocol records (it has "
            f"{others}); rows that mix protocols are not averaged")
      for r in recs:
        if names is None:
          names, first = r.class_names, d
        elif r.class_names != names:
          raise ValueError(
              f"row {method!r}: {r.path} has {len(r.class_names)} classes "
              f"{r.class_names[:3]}... but {first} has {len(names)} "
              f"{names[:3]}...; rows that mix class sets are not averaged")
      for model in ("student", "teacher"):
        mine = [r for r in recs if r.model == model]
        if not mine:
          continue
        final = max(mine, key=lambda r: r.step)
        finite = [r for r in mine if np.isfinite(r.miou)] or mine
        best = max(finite, key=lambda r: (r.miou, -r.step))
        for ckpt, r in (("final", final), ("best", best)):
          runs_, steps, ious = per[(model, ckpt)]
          runs_.append(d)
          steps.append(r.step)
          ious.append(r.iou)
    for (model, ckpt), (runs_, steps, ious) in per.items():
      if not ious:
        continue
      if len(ious) != len(dirs):
        missing = sorted(set(dirs) - set(runs_))
        raise ValueError(f"row {method!r}: {missing} have no {model} "
                         "records; the seeds of a row must all have them")
      out.append(Row(method, model, ckpt, runs_, steps, np.stack(ious)))
  return out, proto, names


def class_ids(spec: str, n: int) -> tuple[int, ...]:
  if spec in ("", "all"):
    return tuple(range(n))
  if spec in CLASS_SETS:
    ids = CLASS_SETS[spec]
  else:
    ids = tuple(int(i) for i in spec.split("/"))
  if max(ids) >= n:
    raise ValueError(f"--classes={spec!r} names class {max(ids)} but the "
                     f"records have {n} classes")
  return ids


def reference_miou(rows: list[Row], spec: str, ids) -> float | None:
  """``--fully_supervised``: a number, or a row name (its final student)."""
  if not spec:
    return None
  try:
    return float(spec)
  except ValueError:
    pass
  for r in rows:
    if r.method == spec and r.model == "student" and r.checkpoint == "final":
      return float(r.per_seed_miou(ids).mean())
  raise ValueError(f"--fully_supervised={spec!r} is neither a number nor a "
                   f"row name ({sorted({r.method for r in rows})})")


def summarize(rows: list[Row], ids, fs: float | None) -> list[dict]:
  """One dict per row: mean/std mIoU, per-class mean/std, Rel."""
  out = []
  for r in rows:
    m = r.per_seed_miou(ids)
    sub = r.iou[:, list(ids)] * 100
    with np.errstate(invalid="ignore"):
      import warnings  # pylint: disable=g-import-not-at-top
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cls_mean, cls_std = np.nanmean(sub, 0), np.nanstd(sub, 0)
    out.append(dict(
        method=r.method, model=r.model, checkpoint=r.checkpoint,
        seeds=len(r.runs), steps=r.steps, runs=r.runs,
        miou_mean=float(m.mean()), miou_std=float(m.std()),
        rel=(100 * float(m.mean()) / fs if fs else None),
        class_mean=cls_mean, class_std=cls_std))
  return out


def _fmt(v: float, digits: int) -> str:
  return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown(summary: list[dict], names: Sequence[str], ids, proto: str,
             digits: int = 1) -> str:
  short = (tables.SHORT_NAMES if len(names) == len(tables.SHORT_NAMES)
           else tuple(names))
  has_rel = any(s["rel"] is not None for s in summary)
  lines = [f"Protocol `{proto}`, {len(ids)} classes; per-class IoU = mean "
           "over seeds, mIoU = mean ± std over seeds.", ""]
  for ckpt in CHECKPOINTS:
    rows = [s for s in summary if s["checkpoint"] == ckpt]
    if not rows:
      continue
    header = (["Method", "Model", "Seeds"] + [short[i] for i in ids] +
              ["mIoU"] + (["Rel."] if has_rel else []))
    lines += [f"### {ckpt.capitalize()} checkpoint", "",
              "| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3))
              + "|"]
    for s in rows:
      cells = [s["method"], s["model"], str(s["seeds"])]
      cells += [_fmt(v, digits) for v in s["class_mean"]]
      cells.append(f"{_fmt(s['miou_mean'], digits)} ± "
                   f"{_fmt(s['miou_std'], digits)}")
      if has_rel:
        cells.append(_fmt(s["rel"], digits))
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def write_csv(path: str, summary: list[dict], names, ids, proto) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["method", "model", "checkpoint", "protocol", "seeds",
                "steps", "miou_mean", "miou_std", "rel"] +
               [f"{names[i]} mean" for i in ids] +
               [f"{names[i]} std" for i in ids])
    for s in summary:
      w.writerow([s["method"], s["model"], s["checkpoint"], proto,
                  s["seeds"], "/".join(str(x) for x in s["steps"]),
                  f"{s['miou_mean']:.4f}", f"{s['miou_std']:.4f}",
                  "" if s["rel"] is None else f"{s['rel']:.4f}"] +
                 [f"{v:.4f}" for v in s["class_mean"]] +
                 [f"{v:.4f}" for v in s["class_std"]])


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
            (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
            (188, 189, 34), (23, 190, 207)]


def bar_plot(path: str, summary: list[dict], names, ids, title: str) -> None:
  """Grouped bars of the per-class mean IoU (one group per class, one bar
  per row and model), std whiskers, a legend; drawn with PIL."""
  n_bars = len(summary)
  bar, gap, left, top, plot_h = 8, 14, 50, 40, 300
  group = n_bars * bar + gap
  width = left + len(ids) * group + 20
  legend_h = 16 * n_bars + 10
  height = top + plot_h + 90 + legend_h
  img = Image.new("RGB", (max(width, 420), height), "white")
  d = ImageDraw.Draw(img)
  font = ImageFont.load_default()
  y0 = top + plot_h
  d.text((left, 10), title, fill="black", font=font)
  for v in range(0, 101, 20):
    y = y0 - v * plot_h / 100
    d.line([(left - 4, y), (width - 10, y)], fill=(220, 220, 220))
    d.text((5, y - 6), f"{v}", fill="black", font=font)
  d.line([(left, top), (left, y0)], fill="black")
  for gi, c in enumerate(ids):
    x0 = left + gi * group + gap // 2
    for bi, s in enumerate(summary):
      m, sd = s["class_mean"][gi], s["class_std"][gi]
      if not np.isfinite(m):
        continue
      x = x0 + bi * bar
      col = _PALETTE[bi % len(_PALETTE)]
      d.rectangle([x, y0 - m * plot_h / 100, x + bar - 2, y0], fill=col)
      if np.isfinite(sd) and sd > 0:
        xm = x + (bar - 2) / 2
        d.line([(xm, y0 - (m - sd) * plot_h / 100),
                (xm, y0 - (m + sd) * plot_h / 100)], fill="black")
    label = Image.new("RGB", (80, 12), "white")
    ImageDraw.Draw(label).text((0, 0), str(names[c])[:13], fill="black",
                               font=font)
    img.paste(label.rotate(90, expand=True), (x0, y0 + 4))
  ly = y0 + 90
  for bi, s in enumerate(summary):
    col = _PALETTE[bi % len(_PALETTE)]
    d.rectangle([left, ly + 16 * bi, left + 10, ly + 16 * bi + 10], fill=col)
    d.text((left + 16, ly + 16 * bi - 1),
           f"{s['method']} / {s['model']}: mIoU {s['miou_mean']:.1f} ± "
           f"{s['miou_std']:.1f} ({s['seeds']} seeds)", fill="black",
           font=font)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  img.save(path)


def aggregate(specs: Sequence[str], out_dir: str, *, protocol: str = "",
              classes: str = "all", fully_supervised: str = "",
              digits: int = 1) -> list[dict]:
  """Writes the table files (module docstring); returns the row dicts."""
  rows, proto, names = collect(parse_rows(specs), protocol or None)
  ids = class_ids(classes, len(names))
  summary = summarize(rows, ids, reference_miou(rows, fully_supervised, ids))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "table.md"), "w") as f:
    f.write(markdown(summary, names, ids, proto, digits))
  write_csv(os.path.join(out_dir, "table.csv"), summary, names, ids, proto)
  for ckpt in CHECKPOINTS:
    part = [s for s in summary if s["checkpoint"] == ckpt]
    if part:
      bar_plot(os.path.join(out_dir, f"iou_{ckpt}.png"), part, names, ids,
               f"per-class IoU (%), {ckpt} checkpoint, protocol {proto}")
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m sdeseg_jax.predict.aggregate",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("rows", nargs="+", help="NAME=GLOB or GLOB of seed runs")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--protocol", default="", help="paper | full | <evaluator>")
  p.add_argument("--classes", default="all",
                 help="all | synthia16 | synthia13 | ids separated by /")
  p.add_argument("--fully_supervised", default="",
                 help="row name or mIoU (%%) of the fully supervised model")
  p.add_argument("--digits", type=int, default=1)
  a = p.parse_args(argv)
  try:
    aggregate(a.rows, a.out, protocol=a.protocol, classes=a.classes,
              fully_supervised=a.fully_supervised, digits=a.digits)
  except (ValueError, FileNotFoundError) as e:
    print(f"aggregate: {e}", file=sys.stderr)
    return 2
  print(open(os.path.join(a.out, "table.md")).read())
  return 0


if __name__ == "__main__":
  sys.exit(main())
