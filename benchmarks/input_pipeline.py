r"""Input-pipeline throughput at the reference's full-size settings.

  python benchmarks/input_pipeline.py [--workers 0,2] [--batches 20]

Builds a MiniCity Cityscapes-layout dataset (rendered at 256x128, then
Lanczos-*up*sampled to the reference's preprocessed format: 1024x512 JPEG
q98 4:4:4 in ``leftImg8bit_small``/``leftImg8bit_sequence_small`` with the
downsampling CLI), prepares it, and times the training pipeline: three frames
per sample, 512x512 random crop, flip, the cascaded Lanczos pyramid (4
scales) and the SDE colour augmentation, with 0 and N grain worker processes.
Batches stay host numpy arrays (no device transfer). ``--step``: the same
run also compiles and times the SDE training step (stage 2 without the
feature distance: ResNet-101 OS16 + dec6 + pose net, frames -1/0/1) on
random batches of the pipeline's crop and batch size, and reports how many
times faster the pipeline produces samples than the step consumes them
(``supply_ratio`` = step seconds per sample / pipeline seconds per sample,
per worker setting). Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import _report

from configs import common
from sdeseg_jax.data import downsample
from sdeseg_jax.data import minicity
from sdeseg_jax.data import pipeline


def build(root: str, sequences: int) -> None:
  if not os.path.isfile(os.path.join(root, "minicity.json")):
    minicity.generate(root, "cityscapes", 0, width=256, height=128,
                      num_train_sequences=sequences, num_val_sequences=1,
                      log=None)
  downsample.run(root, "cityscapes", (1024, 512), workers=2,
                 log=lambda s: None)


def measure(stream, data_dir: str, batch_size: int, batches: int,
            warmup: int) -> dict[str, float]:
  t0 = time.perf_counter()
  loader = pipeline.make_loader(stream, split="train",
                                global_batch_size=batch_size, seed=0,
                                train=True, data_dir=data_dir)
  for _ in range(warmup):
    next(loader)
  t1 = time.perf_counter()
  for _ in range(batches):
    next(loader)
  t2 = time.perf_counter()
  loader.close()
  return {"startup_s": round(t1 - t0, 2),
          "samples_per_s": round(batches * batch_size / (t2 - t1), 2),
          "ms_per_sample": round(1000 * (t2 - t1) / (batches * batch_size),
                                 1)}


def step_seconds(batch_size: int, height: int, width: int, steps: int,
                 depth: int) -> dict[str, float]:
  """Median seconds of our jitted SDE step (after one warm-up step)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import step_cost
  from configs import sde_cityscapes
  from sdeseg_jax.train import sde
  from sdeseg_jax.utils import sharding
  # pylint: enable=g-import-not-at-top
  config = sde_cityscapes.get_config("stage=2,fd=0")
  config.model.encoder_depth = depth
  config.model.encoder_init = ""
  config.train.batch_size = batch_size
  mesh = sharding.make_mesh(jax.devices()[:1])
  host = step_cost.sde_batch(batch_size, height, width)
  cs = _report.compile_train_step(sde.SDETask(config), config, host, mesh)
  _, _, times = _report.time_steps(cs.compiled, cs.init(), cs.batch, steps,
                                   warmup=1)
  return {"compile_s": round(cs.compile_s, 1),
          "step_s": round(float(sorted(times)[len(times) // 2]), 2)}


def main(argv=None) -> int:
  p = _report.parser(None)
  p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                   "sdeseg_input_bench"))
  p.add_argument("--workers", default="0,2")
  p.add_argument("--batch_size", type=int, default=2)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--sequences", type=int, default=8)
  p.add_argument("--step", action="store_true",
                 help="also time the SDE step at the crop size (minutes)")
  p.add_argument("--step_steps", type=int, default=1)
  p.add_argument("--step_depth", type=int, default=101)
  a = _report.parse(p, argv, absl=True)  # grain workers read absl flags.
  root = os.path.join(a.workdir, "cityscapes")
  t = time.perf_counter()
  build(root, a.sequences)
  print(f"dataset ready in {time.perf_counter() - t:.1f}s: {root}")
  results = {}
  for nw in (int(x) for x in a.workers.split(",")):
    stream = common.stream_config(
        "bench_cityscapes", "cityscapes", path=root, image_folder="small",
        frame_offsets=(-1, 0, 1), image_size=(512, 1024),
        crop_size=(512, 512), color_aug=True, num_scales=4,
        num_workers=nw)
    r = measure(stream, os.path.join(a.workdir, "tfds"), a.batch_size,
                a.batches, a.warmup)
    results[f"workers_{nw}"] = r
    print(f"workers={nw}: {r['samples_per_s']:.2f} samples/s "
          f"({r['ms_per_sample']:.1f} ms/sample, startup "
          f"{r['startup_s']:.1f}s)")
  step = {}
  if a.step:
    step = step_seconds(a.batch_size, 512, 512, a.step_steps, a.step_depth)
    per_sample = step["step_s"] / a.batch_size
    step["step_ms_per_sample"] = round(1000 * per_sample, 1)
    for key, r in results.items():
      step[f"supply_ratio_{key}"] = round(
          1000 * per_sample / r["ms_per_sample"], 1)
    print(f"SDE step (R{a.step_depth} OS16, 512x512, batch {a.batch_size}): "
          f"{step['step_s']:.2f} s = {step['step_ms_per_sample']:.0f} "
          f"ms/sample; the pipeline supplies "
          + ", ".join(f"{k}: {v}x" for k, v in step.items()
                      if k.startswith("supply")))
  _report.emit_json({
      "benchmark": "input_pipeline", "image": "1024x512 jpg",
      "crop": "512x512", "frames": 3, "pyramid_scales": 4,
      "color_aug": True, "batch_size": a.batch_size,
      "cpu_count": os.cpu_count(), **results, **step})
  return 0


if __name__ == "__main__":
  sys.exit(main())
