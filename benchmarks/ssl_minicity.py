r"""SSL ablation on MiniCity: the rows of IJCV Table 3/5 at a tiny budget.

  python benchmarks/ssl_minicity.py [--regime paired] [--workdir DIR] \
      [--rows baseline,...] [--seeds 0,1,2,3,4] [--steps N] [--labels N] \
      [--sde <an sde_minicity workdir>]

``--regime`` picks every default (``REGIMES``): ``paired`` (the default)
is the issue-12 table, 7 rows x 5 seeds sized to finish within an hour on
the 2-core box; ``legacy`` is the setting of the figures in
docs/benchmarks.md (3 seeds, 6 of 24 labeled, 150 steps). Any flag given
overrides its regime value.

Each row of ``configs/ssl_minicity.py`` (baseline = labeled CE only,
pseudo = + mean-teacher pseudo labels, classmix, depthmix = DepthMix on the
rendered depth (no SDE pseudo depth is exported here), transfer = encoder
and decoder from the SDE, transfer_depthmix, mtl_depthmix = PAD multi-task
SDE + DepthMix on the student's online disparity) is trained without
ImageNet weights (this machine has none), for the same number of steps
with ``--labels`` labeled images out of ``--sequences`` sequences, and
evaluated on MiniCity val (student, paper protocol). The rows with SDE
transfer (``transfer*``, ``mtl*``) start from ``--sde``; without it the
``paired`` regime first trains one (``configs/sde_minicity.py``,
``sde_steps`` steps, same width and images) into ``<workdir>/sde``, shared
by every seed, as the papers share one SDE.

Runs are paired by seed: the seed draws the labeled subset and the
initial weights, and every row of a seed must have the same subset and the
same initial values for the parameters rows share (checked before each
run; a mismatch stops the table naming row and seed). Finished runs are
kept in ``<workdir>/ablation_runs.json``: a rerun skips them, an
interrupted table continues. Prints per row mean +- std, the mean paired
difference to the baseline with its 95% Student-t interval over seeds,
then which of the papers' orderings (``PAPER_ORDERINGS``) hold here, and
ends with one JSON line. All runs share one generated dataset and a
persistent compilation cache (seeds do not change the compiled step).
"""

from __future__ import annotations

import glob
import os

import _ablation
import _report
import numpy as np

from configs import ssl_cityscapes

ROWS = ("baseline", "pseudo", "classmix", "depthmix", "transfer",
        "transfer_depthmix", "mtl_depthmix")

# SSL orderings of the papers (372 labels): IJCV Table 3 (mixing), Table 5
# (transfer) and the CVPR Table 2 combination (multi-task + DepthMix).
PAPER_ORDERINGS = (
    _ablation.Ordering("pseudo", "baseline", 3.24, "IJCV Tab. 3"),
    _ablation.Ordering("classmix", "pseudo", 0.78, "IJCV Tab. 3"),
    _ablation.Ordering("depthmix", "classmix", 0.98, "IJCV Tab. 3"),
    _ablation.Ordering("depthmix", "baseline", 5.00, "IJCV Tab. 3"),
    _ablation.Ordering("transfer", "baseline", 1.31, "IJCV Tab. 5"),
    # The papers report no transfer + DepthMix row; they state that the
    # components add up (CVPR Tab. 2 text).
    _ablation.Ordering("transfer_depthmix", "transfer", None,
                       "CVPR Tab. 2 text"),
    _ablation.Ordering("mtl_depthmix", "depthmix", 2.52, "CVPR Tab. 2"),
    _ablation.Ordering("mtl_depthmix", "baseline", 7.52, "CVPR Tab. 2"),
)

# ``legacy``: the figures of docs/benchmarks.md (``--steps=500 --sde=DIR``
# for its second table). ``paired``: the issue-12 table (docs/benchmarks.md
# "Ablation tables").
REGIMES = {
    "legacy": dict(rows="baseline,pseudo,classmix,depthmix,mtl_depthmix",
                   seeds="0,1,2", steps=150, labels=6, sequences=24,
                   height=64, width=128, crop=64, lr=0.02, model_width=16,
                   sde_steps=0),
    "paired": dict(rows=",".join(ROWS), seeds="0,1,2,3,4", steps=300,
                   labels=8, sequences=48, height=64, width=128, crop=64,
                   lr=0.02, model_width=16, sde_steps=1500),
}


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


def parse_args(argv=None):
  """The command line, with every unset flag taken from ``--regime``."""
  p = _report.parser(__doc__, first_line=False)
  p.add_argument("--regime", default="paired", choices=sorted(REGIMES))
  p.add_argument("--rows")
  p.add_argument("--seeds")
  p.add_argument("--steps", type=int)
  p.add_argument("--labels", type=int)
  p.add_argument("--sequences", type=int)
  p.add_argument("--height", type=int)
  p.add_argument("--width", type=int)
  p.add_argument("--crop", type=int)
  p.add_argument("--lr", type=float)
  p.add_argument("--model_width", type=int,
                 help="channels of the ResNet-18 stem (config width)")
  p.add_argument("--sde_steps", type=int,
                 help="steps of the SDE trained into <workdir>/sde when "
                      "--sde is not given (0: the SDE rows start random)")
  p.add_argument("--workdir", default="",
                 help="default /tmp/ssl_minicity_<regime> (kept: a rerun "
                      "resumes the table)")
  p.add_argument("--sde", default="",
                 help="an sde_minicity workdir (same width) for the rows "
                      "with SDE transfer (transfer*, mtl*)")
  args = _report.parse(p, argv, absl=True, quiet=True)
  for k, v in REGIMES[args.regime].items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  return args


def needs_sde(row: str) -> bool:
  return ssl_cityscapes.row_spec(row)["init"] == "sde"


def ensure_sde(args, root: str) -> str:
  """Trains (or resumes) the shared SDE of the table; returns its workdir."""
  # pylint: disable=g-import-not-at-top
  from configs import sde_minicity
  from sdeseg_jax.train import sde
  # pylint: enable=g-import-not-at-top
  workdir = os.path.join(root, "sde")
  config = sde_minicity.get_config(
      f"width={args.model_width},height={args.height},"
      f"image_width={args.width},sequences={args.sequences},"
      f"steps={args.sde_steps}")
  print(f"SDE for the transfer rows: {args.sde_steps} steps into {workdir}",
        flush=True)
  sde.run(config, workdir)
  return workdir


def main(argv=None):
  args = parse_args(argv)
  # pylint: disable=g-import-not-at-top
  import jax
  from configs import common
  from configs import ssl_minicity
  from sdeseg_jax.data import resolve
  from sdeseg_jax.train import ssl
  # pylint: enable=g-import-not-at-top
  root = args.workdir or f"/tmp/ssl_minicity_{args.regime}"
  os.makedirs(root, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(root, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  rows = [r for r in args.rows.split(",") if r]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  sde_dir = args.sde
  if not sde_dir and args.sde_steps and any(needs_sde(r) for r in rows):
    sde_dir = ensure_sde(args, root)
  regime = {k: getattr(args, k) for k in REGIMES["paired"]
            if k not in ("rows", "seeds")}
  regime["sde"] = os.path.abspath(sde_dir) if sde_dir else ""
  store = _ablation.RunStore(root, "ssl_minicity", regime)
  data = os.path.join(root, "minicity")
  resolve.ensure_minicity(common.minicity_config(
      layout="cityscapes", seed=0, width=args.width, height=args.height,
      num_train_sequences=args.sequences, num_val_sequences=8), data,
                          log=None)
  data_dir = os.path.join(root, "tfds")

  def config_of(r, s):
    config = ssl_minicity.get_config(
        f"row={r},seed={s},labels={args.labels},steps={args.steps},"
        f"sequences={args.sequences},height={args.height},"
        f"image_width={args.width},crop={args.crop},"
        f"width={args.model_width}" + (f",sde={sde_dir}" if sde_dir else ""))
    # One learning rate for the whole net (everything starts random here).
    config.optim.lr = args.lr
    config.optim.groups = tuple(
        g for g in config.optim.groups if g[0] != "encoder/.*")
    # Ten logs: their wall times give the step cost (step_seconds).
    config.train.update(log_every=max(1, args.steps // 10),
                        eval_every=args.steps,
                        image_every=0, checkpoint_every=args.steps)
    config.data.tfds_dir = data_dir
    for k in ("labeled", "unlabeled", "val", "val_full"):
      config.data[k].path = data
    return config

  def pairing(r, s):
    config = config_of(r, s)
    return _ablation.run_pairing(ssl.SSLTask(config), config,
                                 ssl.example_batch(config),
                                 config.data.labeled, data_dir)

  def train(r, s):
    workdir = os.path.join(root, f"{r}_s{s}")
    ssl.run(config_of(r, s), workdir)
    q = late_mean(workdir, "q")
    # mIoU in percent; q = None where the row has no pseudo-labels.
    return {"miou": round(100 * final_miou(workdir), 2),
            "sec_per_step": round(_ablation.step_seconds(workdir), 4),
            "mean_q_second_half": round(q, 4) if np.isfinite(q) else None}

  _ablation.run_table(store, rows, seeds, pairing=pairing, train=train)
  print(f"\nMiniCity val mIoU (%), {args.labels} labeled of "
        f"{args.sequences} sequences, {args.steps} steps, "
        f"{args.crop}x{args.crop} crops of {args.width}x{args.height}, "
        f"width {args.model_width}, seeds {seeds}, regime {args.regime}"
        + (f", SDE {sde_dir}" if sde_dir else ""))
  out = _ablation.report(store, rows, rows[0], PAPER_ORDERINGS)
  secs = [r["seconds"] for r in store.runs.values()]
  _report.emit_json({"benchmark": "ssl_minicity", "regime": args.regime,
                     **regime, "seeds": seeds,
                     "sec_per_run": round(float(np.mean(secs)), 1),
                     "store": store.path, **out})


if __name__ == "__main__":
  main()
