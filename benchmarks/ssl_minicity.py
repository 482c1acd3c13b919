r"""SSL ablation on MiniCity: the rows of IJCV Table 3/7 at a tiny budget.

  python benchmarks/ssl_minicity.py [--steps 150] [--seeds 0,1,2] \
      [--rows baseline,pseudo,classmix,depthmix,mtl_depthmix] [--labels 6] \
      [--sde <an sde_minicity workdir>]

Each row of ``configs/ssl_minicity.py`` (baseline = labeled CE only,
pseudo = + mean-teacher pseudo labels, classmix, depthmix = DepthMix on the
rendered depth (no SDE pseudo depth is exported here), mtl_depthmix =
PAD multi-task SDE + DepthMix on the student's online disparity) is trained
without ImageNet weights (this machine has none); the rows with SDE
transfer (``transfer*``, ``mtl*``) start from ``--sde`` (e.g. a
``benchmarks/sde_minicity.py`` workdir with the default width), the others
from random weights, for the same number of steps with ``--labels`` labeled images out of
``--sequences`` sequences, for every seed (labeled subset and init), and
evaluated on MiniCity val (student, paper protocol). Prints a mean +- std
table (and each run's mean pseudo-label weight q over its second half)
and ends with one JSON line. All runs share one generated dataset and
a persistent compilation cache (seeds do not change the compiled step).
"""

from __future__ import annotations

import glob
import os
import tempfile
import time

import _report
import jax
import numpy as np

from configs import common
from configs import ssl_minicity
from sdeseg_jax.data import resolve
from sdeseg_jax.train import ssl


def final_miou(workdir: str, model: str = "student") -> float:
  """The final mIoU (fraction) of ``model`` (paper protocol)."""
  from sdeseg_jax.eval import evaluators  # pylint: disable=g-import-not-at-top
  rec = evaluators.read_latest(workdir, "segmentation")
  if rec is None or model not in rec["models"]:
    raise ValueError(f"no {model} evaluation in "
                     f"{evaluators.output_dir(workdir, 'segmentation')}")
  return rec["models"][model]["miou"] / 100


def late_mean(workdir: str, tag: str) -> float:
  """Mean of a logged scalar over the second half of the run (NaN if the
  row does not log it, e.g. ``q`` without unlabeled data)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vals = {}
  for f in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for e in tf.compat.v1.train.summary_iterator(f):
      for v in e.summary.value:
        if v.tag == tag:
          vals[int(e.step)] = float(tf.make_ndarray(v.tensor))
  if not vals:
    return float("nan")
  last = max(vals)
  return float(np.mean([v for k, v in vals.items() if k > last / 2]))


def main(argv=None):
  p = _report.parser(__doc__, first_line=False)
  p.add_argument("--rows",
                 default="baseline,pseudo,classmix,depthmix,mtl_depthmix")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--steps", type=int, default=150)
  p.add_argument("--labels", type=int, default=6)
  p.add_argument("--sequences", type=int, default=24)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--crop", type=int, default=64)
  p.add_argument("--lr", type=float, default=0.02)
  p.add_argument("--workdir", default="")
  p.add_argument("--sde", default="",
                 help="an sde_minicity workdir (same width) for the rows "
                      "with SDE transfer (transfer*, mtl*)")
  args = _report.parse(p, argv, absl=True, quiet=True)
  root = args.workdir or tempfile.mkdtemp(prefix="ssl_minicity_")
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(root, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  data = os.path.join(root, "minicity")
  resolve.ensure_minicity(common.minicity_config(
      layout="cityscapes", seed=0, width=args.width, height=args.height,
      num_train_sequences=args.sequences, num_val_sequences=8), data,
                          log=None)
  rows = args.rows.split(",")
  seeds = [int(s) for s in args.seeds.split(",")]
  results = {r: [] for r in rows}
  secs = {r: [] for r in rows}
  qs = {r: [] for r in rows}
  for r in rows:
    for s in seeds:
      config = ssl_minicity.get_config(
          f"row={r},seed={s},labels={args.labels},steps={args.steps},"
          f"sequences={args.sequences},height={args.height},"
          f"image_width={args.width},crop={args.crop}"
          + (f",sde={args.sde}" if args.sde else ""))
      # One learning rate for the whole net (everything starts random here).
      config.optim.lr = args.lr
      config.optim.groups = tuple(
          g for g in config.optim.groups if g[0] != "encoder/.*")
      config.train.update(log_every=50, eval_every=args.steps,
                          image_every=0, checkpoint_every=args.steps)
      config.data.tfds_dir = os.path.join(root, "tfds")
      for k in ("labeled", "unlabeled", "val", "val_full"):
        config.data[k].path = data
      workdir = os.path.join(root, f"{r}_s{s}")
      t0 = time.time()
      ssl.run(config, workdir)
      secs[r].append(time.time() - t0)
      results[r].append(final_miou(workdir))
      qs[r].append(late_mean(workdir, "q"))
      print(f"{r:14s} seed {s}: mIoU {results[r][-1]:5.1f}  "
            f"mean q (2nd half) {qs[r][-1]:.3f}  ({secs[r][-1]:.0f} s)",
            flush=True)
  base = np.mean(results[rows[0]])
  print(f"\nMiniCity val mIoU (%), {args.labels} labeled of "
        f"{args.sequences} sequences, {args.steps} steps, "
        f"{args.crop}x{args.crop} crops of {args.width}x{args.height}, "
        f"seeds {seeds}")
  summary = {}
  for r in rows:
    m, sd = _report.mean_std(results[r])
    summary[r] = {"mean": round(m, 2), "std": round(sd, 2),
                  "runs": results[r],
                  # None where the row has no pseudo-labels (no q).
                  "mean_q_second_half": [round(q, 4) if np.isfinite(q)
                                         else None for q in qs[r]],
                  "sec_per_run": round(float(np.mean(secs[r])), 1)}
  _report.table(
      [("row", 14, ""), ("mIoU", 14, ""), ("vs " + rows[0], 12, "+.2f")],
      [(r, _report.pm(results[r], 8, 4),
        _report.mean_std(results[r])[0] - base) for r in rows])
  _report.emit_json({"benchmark": "ssl_minicity", "steps": args.steps,
                     "labels": args.labels, "sequences": args.sequences,
                     "size": [args.height, args.width], "crop": args.crop,
                     "seeds": seeds, "miou": summary})


if __name__ == "__main__":
  main()
