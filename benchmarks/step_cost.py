r"""Benchmark: time and compiled memory of one training step.

  # SDE stage-2 step at full size (ResNet-101 OS16, 512x512, batch 4,
  # frames -1/0/1, ImageNet feature distance); minutes to compile on a CPU:
  python benchmarks/step_cost.py --mode=sde
  # reduced size for a shared CPU:
  python benchmarks/step_cost.py --mode=sde --height=128 --width=128 \
      --batch=2 --steps=3

Reports the compile time, ``compiled.memory_analysis()`` (arguments,
outputs, temporaries, generated code) and the median time per step after
two warm-up steps, on whatever devices JAX sees (batch split over all of
them). The last line is one JSON object.
"""

from __future__ import annotations

import _report
import numpy as np


def sde_batch(batch: int, height: int, width: int, seed: int = 0):
  """A random SDE batch (docs/design.md keys) with plausible intrinsics."""
  rs = np.random.RandomState(seed)
  img = lambda *s: rs.randint(0, 256, size=s, dtype=np.uint8)
  k = _report.random_intrinsics(height, width)
  color = img(batch, 3, height, width, 3)
  return {
      "color": color, "color_aug": color,
      "pyramid": {f"s{s}": img(batch, height >> s, width >> s, 3)
                  for s in (1, 2, 3)},
      "K": np.repeat(k[None], batch, 0),
      "inv_K": np.repeat(np.linalg.inv(k)[None], batch, 0),
  }


def sde_step_cost(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from configs import sde_cityscapes  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.train import sde  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.utils import sharding  # pylint: disable=g-import-not-at-top

  config = sde_cityscapes.get_config(f"stage=2,fd={args.fd},dtype={args.dtype}")
  config.model.encoder_depth = args.depth
  config.model.remat = args.remat
  config.model.output_stride = args.output_stride
  config.train.batch_size = args.batch
  config.model.encoder_init = ""  # random weights: cost does not depend
  mesh = sharding.make_mesh()
  task = sde.SDETask(config)
  host = sde_batch(args.batch, args.height, args.width)
  # Random weights: the cost does not depend on them. (The feature distance
  # is then large, as the two encoders differ; with ImageNet weights both
  # start equal.)
  cs = _report.compile_train_step(task, config, host, mesh)
  times = []
  if args.steps > 0:  # --steps=0: compile and memory analysis only
    _, _, times = _report.time_steps(cs.compiled, cs.init(), cs.batch,
                                     args.steps, warmup=2)
  return {
      "benchmark": "step_cost", "mode": "sde", "backend": jax.default_backend(),
      "devices": jax.device_count(), "encoder_depth": args.depth,
      "output_stride": args.output_stride, "height": args.height,
      "width": args.width, "batch": args.batch, "frames": 3,
      "feature_distance": bool(args.fd), "dtype": args.dtype,
      "remat": args.remat,
      "params_m": round(cs.num_params / 1e6, 2),
      "compile_s": round(cs.compile_s, 1),
      "step_median_s": (round(float(np.median(times)), 3) if times
                        else None),
      "step_times_s": [round(x, 3) for x in times],
      **_report.memory_mib(cs.compiled),
  }


def main():
  p = _report.parser(__doc__)
  p.add_argument("--mode", default="sde", choices=["sde"])
  _report.add_step_cost_args(
      p, batch=4, steps=5,
      steps_help="timed steps after 2 warm-up steps; 0: compile only")
  p.add_argument("--output_stride", type=int, default=16)
  p.add_argument("--fd", type=int, default=1, help="feature distance (1/0)")
  args = _report.parse(p)
  res = sde_step_cost(args)
  _report.print_fields(res, skip=("step_times_s",))
  _report.emit_json(res)


if __name__ == "__main__":
  main()
