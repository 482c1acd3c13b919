r"""Data selection on MiniCity: Fig. 7 ratios, SSL mIoU per method, timings.

  python benchmarks/selection_minicity.py [--sequences 200] \
      [--schedule 8-16-32] [--budgets 16,32] [--seeds 42,43,44] \
      [--methods random,entropy,ds,us,ds_us] [--student-steps 60] \
      [--ssl-steps 150] [--sde-steps 300] [--teacher <sde_minicity workdir>] \
      [--timing-n 2975] [--workdir W]

1. An SDE teacher (``configs/sde_minicity.py``, ``--sde-steps`` steps on
   its own MiniCity) unless ``--teacher`` names one.
2. A pool of ``--sequences`` annotated MiniCity images (>= 200 so that
   rare classes are rare) and ``--val-sequences`` validation images.
3. ``mode=select`` (``configs/select_minicity.py``) for every method and
   seed with ``--schedule``; the teacher features, distances and pseudo
   depth are computed once and copied into every selection workdir
   (the cache check accepts them: same pool, same teacher).
4. (a) per-class ratio of selected to pool pixels at each budget, mean over
   seeds (the paper's Fig. 7: about budget/N for random, rare classes
   above it for entropy and DS+US);
   (b) the SSL mIoU (``configs/ssl_minicity.py:row=baseline``, CE on the
   selected images, random init) per method and budget, mean +- std over
   the seeds (``--ssl-steps 0`` skips it);
   (c) wall time of every selection round and of the N x N distance matrix
   and one round of Eq. 4 picks at ``--timing-n`` (synthetic features of
   the real size, 4 x 8 x 256 = 8192 dimensions).
Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import _report
import jax
import numpy as np

import ssl_minicity as ssl_bench  # benchmarks/ssl_minicity.py
from configs import common
from configs import sde_minicity
from configs import select_minicity
from configs import ssl_minicity as ssl_config
from sdeseg_jax.data import resolve
from sdeseg_jax.selection import blocks
from sdeseg_jax.selection import program
from sdeseg_jax.train import sde
from sdeseg_jax.train import ssl

CACHE_FILES = ("selection_cache.npz", "distances.npy")


def timing(n: int, dim: int, picks: int) -> dict[str, float]:
  """Seconds of the distance matrix and of ``picks`` Eq. 4 picks at N=n."""
  rng = np.random.RandomState(0)
  feats = rng.randn(n, 4, 8, dim // 32).astype(np.float32)
  blocks.pairwise_distances(blocks.zscore(feats[:64]), block=64)  # compile
  t0 = time.time()
  d = blocks.pairwise_distances(blocks.zscore(feats), block=512)
  t_dist = time.time() - t0
  e = rng.rand(n).astype(np.float32)
  blocks.farthest_point(d, [0], 2, bias=e)  # compile
  t0 = time.time()
  got = blocks.farthest_point(d, [0], picks, bias=e, lambda_e=1000.0)
  t_fps = time.time() - t0
  return {"n": n, "dim": dim, "distance_s": round(t_dist, 2),
          "eq4_picks": len(got), "eq4_s": round(t_fps, 2),
          "eq4_ms_per_pick": round(1000 * t_fps / max(len(got), 1), 3)}


def main(argv=None):
  p = _report.parser(__doc__, first_line=False)
  p.add_argument("--workdir", default="")
  p.add_argument("--teacher", default="")
  p.add_argument("--sde-steps", type=int, default=300)
  p.add_argument("--sequences", type=int, default=200)
  p.add_argument("--val-sequences", type=int, default=16)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--schedule", default="8-16-32")
  p.add_argument("--budgets", default="16,32")
  p.add_argument("--seeds", default="42,43,44")
  p.add_argument("--methods", default="random,entropy,ds,us,ds_us")
  p.add_argument("--student-steps", type=int, default=60)
  p.add_argument("--ssl-steps", type=int, default=150)
  p.add_argument("--ssl-lr", type=float, default=0.02)
  p.add_argument("--timing-n", type=int, default=2975,
                 help="pool size of the timing (0: skip it)")
  p.add_argument("--timing-picks", type=int, default=372)
  args = _report.parse(p, argv, absl=True, quiet=True)
  root = args.workdir or tempfile.mkdtemp(prefix="selection_minicity_")
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(root, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  tfds = os.path.join(root, "tfds")
  t_start = time.time()

  # 1. Teacher.
  teacher = args.teacher
  if not teacher:
    teacher = os.path.join(root, "teacher")
    cfg = sde_minicity.get_config(f"steps={args.sde_steps},sequences=16,"
                                  f"height={args.height},"
                                  f"image_width={args.width}")
    cfg.train.update(eval_every=0, image_every=0,
                     checkpoint_every=args.sde_steps)
    cfg.eval.split = ""
    cfg.data.tfds_dir = tfds
    t0 = time.time()
    sde.run(cfg, teacher)
    print(f"teacher: {args.sde_steps} SDE steps in {time.time() - t0:.0f}s",
          flush=True)

  # 2. Pool.
  pool = os.path.join(root, "pool")
  resolve.ensure_minicity(common.minicity_config(
      layout="cityscapes", seed=0, width=args.width, height=args.height,
      num_train_sequences=args.sequences,
      num_val_sequences=args.val_sequences), pool, log=None)

  # 3. Selections.
  methods = args.methods.split(",")
  seeds = [int(s) for s in args.seeds.split(",")]
  budgets = [int(b) for b in args.budgets.split(",")]
  schedule = select_minicity.select_cityscapes.parse_sizes(args.schedule)
  missing = [b for b in budgets if b not in schedule]
  if missing:
    raise SystemExit(f"--budgets {missing} are not in --schedule {schedule}")
  summaries, first, pd_src = {}, None, None
  for m in methods:
    for s in seeds:
      cfg = select_minicity.get_config(
          f"method={m},seed={s},path={pool},teacher={teacher},"
          f"schedule={args.schedule},steps={args.student_steps},"
          f"sequences={args.sequences},height={args.height},"
          f"image_width={args.width}")
      cfg.data.tfds_dir = tfds
      work = os.path.join(root, f"select_{m}_s{s}")
      os.makedirs(work, exist_ok=True)
      if first is not None:  # the features are shared by every run
        for f in CACHE_FILES:
          if not os.path.exists(os.path.join(work, f)):
            shutil.copy(os.path.join(first, f), work)
      if pd_src is not None and not os.path.exists(
          os.path.join(work, "pseudo_depth")):
        shutil.copytree(os.path.join(pd_src, "pseudo_depth"),
                        os.path.join(work, "pseudo_depth"))
      t0 = time.time()
      summaries[m, s] = program.run(cfg, work)
      first = first or work
      if pd_src is None and os.path.isdir(os.path.join(work,
                                                       "pseudo_depth")):
        pd_src = work
      walls = [r.get("wall_s") for r in summaries[m, s]["rounds"]]
      print(f"select {m:8s} seed {s}: {time.time() - t0:6.1f}s "
            f"(setup {summaries[m, s]['setup_s']}s, rounds {walls})",
            flush=True)

  # (a) Fig. 7.
  names = list(summaries[methods[0], seeds[0]]["class_names"])
  counts = np.load(os.path.join(first, "selection_cache.npz"))[
      "class_counts"]
  share = counts.sum(0) / counts.sum()
  present = [c for c in np.argsort(-share) if share[c] > 0]
  ratios = {}
  for b in budgets:
    k = schedule.index(b)
    print(f"\n(a) selected / pool pixels per class at {b} of "
          f"{args.sequences} images (random expectation {b / args.sequences:.3f}"
          "), mean over seeds; classes by pool share")
    cols = [("class", 14, ""), ("pool %", 7, ".2f")] + [
        (m, 8, ".3f") for m in methods]
    rows = []
    for c in present:
      row = [names[c], 100 * share[c]]
      for m in methods:
        v = [summaries[m, s]["rounds"][k]["class_pixel_ratio"][c]
             for s in seeds]
        v = np.nanmean([np.nan if x is None else x for x in v])
        ratios.setdefault(str(b), {}).setdefault(m, {})[names[c]] = round(
            float(v), 4)
        row.append(float(v))
      rows.append(row)
    _report.table(cols, rows)

  # (c) Timings.
  t = (timing(args.timing_n, 8192, args.timing_picks) if args.timing_n > 0
       else {})
  if t:
    print(f"\n(c) N={t['n']} synthetic {t['dim']}-d features: distance "
          f"matrix {t['distance_s']}s; {t['eq4_picks']} Eq. 4 picks "
          f"{t['eq4_s']}s ({t['eq4_ms_per_pick']} ms/pick)")
  rounds = {m: [[r.get("wall_s") for r in summaries[m, s]["rounds"]]
                for s in seeds] for m in methods}
  print("round wall times (s) per method and seed:", json.dumps(rounds))

  # (b) SSL mIoU.
  miou = {}
  if args.ssl_steps > 0:
    # Seeds outermost: a run stopped early still has whole seeds.
    for s in seeds:
      for b in budgets:
        for m in methods:
          cfg = ssl_config.get_config(
              f"row=baseline,seed={s},labels={b},steps={args.ssl_steps},"
              f"select={os.path.join(root, f'select_{m}_s{s}')},"
              f"sequences={args.sequences},height={args.height},"
              f"image_width={args.width},crop=64")
          cfg.optim.lr = args.ssl_lr
          cfg.optim.groups = ()
          cfg.train.update(log_every=50, eval_every=args.ssl_steps,
                           image_every=0, checkpoint_every=args.ssl_steps)
          cfg.data.tfds_dir = tfds
          for key in ("labeled", "unlabeled", "val", "val_full"):
            cfg.data[key].path = pool
          work = os.path.join(root, f"ssl_{m}_{b}_s{s}")
          ssl.run(cfg, work)
          miou.setdefault(str(b), {}).setdefault(m, []).append(
              ssl_bench.final_miou(work))
          print(f"ssl {m:8s} {b:4d} labels seed {s}: mIoU "
                f"{miou[str(b)][m][-1]:5.1f}", flush=True)
    print(f"\n(b) MiniCity val mIoU (%), row=baseline, {args.ssl_steps} "
          f"steps, seeds {seeds}")
    _report.table([("method", 10, "")] + [(f"{b} labels", 16, "")
                                         for b in budgets],
                  [[m] + [_report.pm(miou[str(b)][m], 6, 5)
                          for b in budgets] for m in methods])

  print(f"total {time.time() - t_start:.0f}s")
  _report.emit_json({
      "benchmark": "selection_minicity", "pool": args.sequences,
      "schedule": list(schedule), "budgets": budgets, "seeds": seeds,
      "student_steps": args.student_steps, "ssl_steps": args.ssl_steps,
      "class_pixel_ratio": ratios,
      "miou": {b: {m: {"mean": round(_report.mean_std(v)[0], 2),
                       "std": round(_report.mean_std(v)[1], 2), "runs": v}
                   for m, v in d.items()} for b, d in miou.items()},
      "round_wall_s": rounds, "timing": t,
      "total_s": round(time.time() - t_start, 1)})


if __name__ == "__main__":
  main()
