r"""Benchmark: SDE training on MiniCity on the CPU, with a learning curve.

  python benchmarks/sde_minicity.py --workdir=/tmp/bench_sde --steps=3000 \
      --eval_every=250 [--config_arg="width=16,lr=3e-4"]

Generates MiniCity into the workdir if needed (``configs/sde_minicity.py``),
trains with the shared engine (same step, checkpoints and resume as
``mode=sde``), evaluates median-scaled depth on MiniCity val every
``--eval_every`` steps and prints the learning curve (training loss from the
TensorBoard events, val abs_rel / delta<1.25, the pose net's snippet ATE,
translation-direction and rotation errors in degrees against the MiniCity
poses, wall time), then the error budget of the final evaluation (abs_rel,
delta<1.25 and share of the error by class, distance and row band,
``eval.depth.DepthBreakdown``). Target on a 2-core CPU: abs_rel <= 0.15 within 20
minutes. The last line is one JSON object.
``--config_arg`` takes the keys of ``configs/sde_minicity.py`` (e.g.
``frames=10,all_frames=True,gap=1,lr=3e-4,pose_lr=0,seed=0``).

Status (2-core CPU). Defaults (pose prior 0.01, see below): 3000 steps in
543 s (0.157 s/step incl. eval, ~7600 steps fit in 20 min), val abs_rel
0.357 (250) -> 0.265 (1000) -> 0.240 (2000) -> 0.225 (3000), delta<1.25
0.616, pose snippet ATE 0.005 m, translation direction error 0.5 degrees,
rotation 0.12 degrees. The 0.15 target is not reached: the ground-truth-pose
oracle (``--config_arg=gt_pose=True``: the warp uses the MiniCity poses and
only the depth net learns) gives the same curve (0.271 at 1000, 0.228 at
3000 in 624 s), so what is left is the depth net at this CPU size (ResNet-18
width 16, 64x128), not the poses.

Without the prior (``--config_arg=pose_prior=0``, the reference's random
pose decoder; the reference never meets the problem because its pose
encoder starts from ImageNet weights) the pose net settles on an
input-independent direction of travel ~50 degrees off the forward motion
(55 -> 49 degrees from step 250 to 1000, snippet ATE 0.38 m) and the depth
net fits that wrong epipole: abs_rel plateaus at 0.44-0.45 (3000 steps,
922 s). A 30x lower pose learning rate (1e-5, a 500-step check) does not
help: the translation drifts sideways first (~80 degrees).
"""

from __future__ import annotations

import glob
import os
import time

import _report


# Pose errors of sdeseg_jax.eval.depth copied into each curve row.
POSE_KEYS = ("pose_ate", "pose_trans_angle_deg", "pose_rot_deg")


def train_losses(workdir: str) -> list[tuple[int, float]]:
  """``(step, loss)`` of the TensorBoard scalars written by the trainer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for f in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for e in tf.compat.v1.train.summary_iterator(f):
      for v in e.summary.value:
        if v.tag == "loss":
          out[int(e.step)] = float(tf.make_ndarray(v.tensor))
  return sorted(out.items())


def main():
  p = _report.parser(__doc__)
  p.add_argument("--workdir", default="/tmp/bench_sde_minicity")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--log_every", type=int, default=25)
  p.add_argument("--config_arg", default="")
  p.add_argument("--budget_min", type=float, default=20.0,
                 help="wall-clock budget the extrapolation refers to")
  args = _report.parse(p, absl=True, quiet=True)

  import jax  # pylint: disable=g-import-not-at-top
  from configs import sde_minicity  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.data import resolve  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.eval import depth as depth_eval  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.train import sde  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.utils import sharding  # pylint: disable=g-import-not-at-top

  arg = ",".join(x for x in (args.config_arg, f"steps={args.steps}") if x)
  config = sde_minicity.get_config(arg)
  config.train.eval_every = args.eval_every
  config.train.log_every = args.log_every
  config.train.checkpoint_every = args.eval_every
  workdir = args.workdir
  os.makedirs(workdir, exist_ok=True)

  t0 = time.time()
  mesh = sharding.make_mesh()
  path = resolve.dataset_root(config, "train", workdir)
  stream = resolve.with_overrides(config.data.train, path=path)
  val_stream = resolve.with_overrides(config.data.val, path=path)
  data_dir = os.path.join(workdir, "tfds")
  loader = pipeline.make_loader(
      stream, split="train", global_batch_size=config.train.batch_size,
      seed=config.seed, train=True, data_dir=data_dir)
  task = sde.SDETask(config)
  (evaluator,) = sde.make_evaluators(task, config, mesh, val_stream,
                                     data_dir, workdir="")

  budget = {}  # the error budget of the latest evaluation

  def eval_fn(state):
    acc = evaluator.accumulate({"params": state.params,
                                "batch_stats": state.batch_stats})
    budget.clear()
    budget.update(acc.breakdown.result())
    return acc.result()
  t_data = time.time() - t0
  curve = []
  t_train = time.time()

  def recording_eval(state):
    res = eval_fn(state)
    step = int(jax.device_get(state.step))
    row = {"step": step, "wall_s": round(time.time() - t_train, 1),
           "abs_rel": round(res["abs_rel"], 4), "a1": round(res["a1"], 4),
           "abs_rel_noscale": round(res["abs_rel_noscale"], 4)}
    # Pose errors against the sidecar poses (val stream with_pose).
    for k in POSE_KEYS:
      if k in res:
        row[k] = round(res[k], 4)
    curve.append(row)
    pose = ""
    if "pose_ate" in row:
      pose = (f"  ate {row['pose_ate']:.4f}  t_dir "
              f"{row['pose_trans_angle_deg']:6.2f}deg  rot "
              f"{row['pose_rot_deg']:.3f}deg")
    print(f"step {step:6d}  {row['wall_s']:8.1f}s  abs_rel "
          f"{row['abs_rel']:.4f}  d<1.25 {row['a1']:.4f}{pose}", flush=True)
    return res

  trainer.fit(config, workdir, task=task, train_iter=loader,
              example_batch=sde.example_batch(config), mesh=mesh,
              eval_fn=recording_eval)
  loader.close()
  wall = time.time() - t_train
  losses = train_losses(workdir)
  print("training loss:", " ".join(f"{s}:{l:.4f}" for s, l in losses))
  if budget:
    print(depth_eval.format_breakdown(
        budget, f"error budget at step {curve[-1]['step']} (median-scaled, "
        "pooled over val pixels)"), flush=True)
  # Steady-state speed from the evaluation timestamps (excludes compile).
  rate = None
  if len(curve) >= 2 and curve[-1]["step"] > curve[0]["step"]:
    rate = (curve[-1]["wall_s"] - curve[0]["wall_s"]) / (
        curve[-1]["step"] - curve[0]["step"])
  result = {
      "benchmark": "sde_minicity", "devices": jax.device_count(),
      "steps": config.train.num_steps, "batch_size": config.train.batch_size,
      "image_size": list(config.data.train.image_size),
      "data_prep_s": round(t_data, 1), "train_wall_s": round(wall, 1),
      "sec_per_step_incl_eval": round(rate, 3) if rate else None,
      "steps_in_budget": (int(args.budget_min * 60 / rate) if rate
                          else None),
      "final_abs_rel": curve[-1]["abs_rel"] if curve else None,
      "final_a1": curve[-1]["a1"] if curve else None,
      "best_abs_rel": min(r["abs_rel"] for r in curve) if curve else None,
      **{f"final_{k}": curve[-1].get(k) if curve else None
         for k in POSE_KEYS},
      "curve": curve,
      "breakdown": budget,
      "train_loss": [[s, round(l, 5)] for s, l in losses],
  }
  _report.emit_json(result)


if __name__ == "__main__":
  main()
