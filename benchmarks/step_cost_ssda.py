r"""Benchmark: cost of one full SSDA training step and of its MGS + mixing.

  # Full size (the main config's step): ResNet-101 OS16 PAD multi-task net,
  # 512x512 crops, labeled target 2 (frames -1/0/1, SDE loss), source 2 with
  # 5 MGS candidates each, target union 2, CDM + TDM + teacher; minutes to
  # compile on a CPU:
  python benchmarks/step_cost_ssda.py
  # reduced size for a shared CPU:
  python benchmarks/step_cost_ssda.py --depth=18 --height=128 --width=128
  # the compiled memory only (the full-size fp32 step needs more than the
  # 24 GiB of host memory of the 2-core CI box to run on its CPU):
  python benchmarks/step_cost_ssda.py --compile_only

Reports the compile time, ``compiled.memory_analysis()`` of the whole step,
the median step time after ``--warmup`` (2) warm-up steps, and the time of the MGS +
mixing part alone (``G`` for all candidates, argmin + gather, both DepthMix
masks, mixing of images / labels / teacher probabilities and the strong
augmentation, jitted separately on the same shapes) with its share of the
step. The last line is one JSON object.
"""

from __future__ import annotations

import _report
import numpy as np


def ssda_batch(b: int, k: int, h: int, w: int, seed: int = 0):
  """A random SSDA batch (``train/ssda.py`` keys) with plausible K."""
  rs = np.random.RandomState(seed)
  img = lambda *s: rs.randint(0, 256, size=s + (3,), dtype=np.uint8)
  lbl = lambda *s: rs.randint(0, 19, size=s).astype(np.int32)
  disp = lambda *s: rs.uniform(0.0, 1.0, size=s).astype(np.float32)
  kk = _report.random_intrinsics(h, w)
  ks = np.repeat(kk[None], b, 0)
  return {
      "target": {"color": img(b, 3, h, w), "label": lbl(b, h, w), "K": ks,
                 "inv_K": np.linalg.inv(ks).astype(np.float32),
                 "pyramid": {f"s{s}": img(b, h >> s, w >> s)
                             for s in (1, 2, 3)}},
      "source": {"color": img(b, k, 1, h, w), "label": lbl(b, k, h, w),
                 "pseudo_depth": disp(b, k, h, w)},
      "unlabeled": {"color": img(b, 1, h, w), "label": lbl(b, h, w),
                    "is_labeled": np.arange(b) % 2 == 0,
                    "pseudo_depth": disp(b, h, w)},
  }


def mix_part(task, batch, rng, num_classes):
  """MGS + CDM/TDM masks + mixing + strong augmentation (no network).

  The step's own code (``SSDATask.select_source``, ``cdm_inputs``,
  ``tdm_inputs`` and ``mixing.consistency.mixed_batch``, which
  ``consistency_loss`` runs before the student), with stand-in teacher
  probabilities in place of the teacher's forward (the network part is not
  timed here).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.mixing import consistency  # pylint: disable=g-import-not-at-top
  unl = batch["unlabeled"]
  src, _, _ = task.select_source(batch["source"], unl["pseudo_depth"])
  k1, k2, k3, k4, k5 = jax.random.split(rng, 5)
  shape = unl["label"].shape
  probs = jax.nn.softmax(jax.random.normal(k4, shape + (num_classes,)), -1)
  cdm = consistency.mixed_batch(task.mix, *task.cdm_inputs(src, unl, probs),
                                mask_rng=k1, aug_rng=k2)
  tdm = consistency.mixed_batch(task.mix, *task.tdm_inputs(unl, probs),
                                mask_rng=k5, aug_rng=k3)
  return cdm, tdm


def run(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from configs import ssda_gta  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.train import ssda  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.utils import sharding  # pylint: disable=g-import-not-at-top

  config = ssda_gta.get_config(f"row={args.row},dtype={args.dtype}")
  config.model.encoder_depth = args.depth
  config.model.remat = args.remat
  b, k = args.batch, config.ssda.num_candidates
  for key in ("batch_target", "batch_source", "batch_unlabeled"):
    config.ssda[key] = b
  mesh = sharding.make_mesh()
  task = ssda.SSDATask(config)
  host = ssda_batch(b, k, args.height, args.width)
  if not config.ssda.mgs:
    host["source"] = jax.tree.map(lambda x: x[:, 0], host["source"])
  cs = _report.compile_train_step(task, config, host, mesh)
  batch = cs.batch
  head = {
      "benchmark": "step_cost_ssda", "row": args.row,
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "encoder_depth": args.depth, "height": args.height,
      "width": args.width, "batch_per_stream": b, "candidates": k,
      "dtype": args.dtype, "remat": args.remat, "params_m": round(cs.num_params / 1e6, 2),
      "compile_s": round(cs.compile_s, 1)}
  if args.compile_only:
    # The compiled program's buffer sizes without running it: what a
    # machine whose memory cannot hold the step still can tell.
    res = {**head, **_report.memory_mib(cs.compiled)}
    if args.buffers:
      res["biggest_buffers"] = _report.biggest_buffers(cs.compiled,
                                                       args.buffers)
    return res
  state, metrics, times = _report.time_steps(cs.compiled, cs.init(), batch,
                                             args.steps, warmup=args.warmup)
  step_s = float(np.median(times))
  mix_times = []
  if config.ssda.mgs:
    jmix = jax.jit(lambda bt, r: mix_part(task, bt, r,
                                          config.model.num_classes))
    rng = jax.random.PRNGKey(0)
    mix_times = _report.timed(
        lambda i: jmix(batch, jax.random.fold_in(rng, i)),
        args.steps + args.warmup, warmup=args.warmup)
  mix_s = float(np.median(mix_times)) if mix_times else float("nan")
  return {
      **head,
      "step_median_s": round(step_s, 3),
      "step_times_s": [round(x, 3) for x in times],
      "mgs_mix_median_s": round(mix_s, 4),
      "mgs_mix_share": round(mix_s / step_s, 4),
      **_report.memory_mib(cs.compiled),
      "loss": float(metrics["loss"]),
      "finite": float(metrics["finite"]),
  }


def main():
  p = _report.parser(__doc__)
  p.add_argument("--row", default="full")
  _report.add_step_cost_args(p, batch=2, steps=3)
  p.add_argument("--warmup", type=int, default=2,
                 help="untimed steps before the timed ones")
  p.add_argument("--compile_only", action="store_true",
                 help="compile and report the memory analysis only")
  args = _report.parse(p)
  res = run(args)
  _report.print_fields(res, skip=("step_times_s", "biggest_buffers"))
  for buf in res.get("biggest_buffers", ()):
    print(f"  {buf['mib']:9.1f} MiB  {buf['shape']:28s} {buf['op']:14s} "
          f"{buf['source']}")
  _report.emit_json(res)


if __name__ == "__main__":
  main()
