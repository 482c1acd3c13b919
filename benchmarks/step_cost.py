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
  # pylint: disable-next=g-import-not-at-top
  from sdeseg_jax.train import step as step_lib
  from sdeseg_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.utils import sharding  # pylint: disable=g-import-not-at-top

  config = sde_cityscapes.get_config(f"stage=2,fd={args.fd},dtype={args.dtype}")
  config.model.encoder_depth = args.depth
  config.model.output_stride = args.output_stride
  config.train.batch_size = args.batch
  config.model.encoder_init = ""  # random weights: cost does not depend
  mesh = sharding.make_mesh()
  task = sde.SDETask(config)
  host = sde_batch(args.batch, args.height, args.width)
  batch = sharding.host_to_global(host, mesh)
  # Random weights: the cost does not depend on them. (The feature distance
  # is then large, as the two encoders differ; with ImageNet weights both
  # start equal.)
  create = trainer.create_state_fn(task, config, trainer.abstract_batch(host))
  shapes = jax.eval_shape(create)
  st = step_lib.state_sharding(shapes, mesh)
  jstep = step_lib.jit_train_step(task, config, mesh, shapes)
  compiled, compile_s = _report.compile_timed(
      jstep, _report.with_shardings(shapes, st), batch)
  n_params = _report.param_count(shapes.params)
  times = []
  if args.steps > 0:  # --steps=0: compile and memory analysis only
    state = jax.jit(create, out_shardings=st)()
    _, _, times = _report.time_steps(compiled, state, batch, args.steps,
                                     warmup=2)
  return {
      "benchmark": "step_cost", "mode": "sde", "backend": jax.default_backend(),
      "devices": jax.device_count(), "encoder_depth": args.depth,
      "output_stride": args.output_stride, "height": args.height,
      "width": args.width, "batch": args.batch, "frames": 3,
      "feature_distance": bool(args.fd), "dtype": args.dtype,
      "params_m": round(n_params / 1e6, 2),
      "compile_s": round(compile_s, 1),
      "step_median_s": (round(float(np.median(times)), 3) if times
                        else None),
      "step_times_s": [round(x, 3) for x in times],
      **_report.memory_mib(compiled),
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
