r"""Benchmark: images per second of ``mode=predict``.

  # the main multi-task net (ResNet-101 OS16, PAD head + depth) at 1024x512:
  python benchmarks/predict_throughput.py
  # smaller, for a shared CPU:
  python benchmarks/predict_throughput.py --depth=50 --images=4

Saves a randomly initialised network of the chosen size as a training run
(the timing does not depend on the weights), writes ``--images`` random
JPEGs of ``--width`` x ``--height`` and reports

* the compile time of the forward (one shape bucket);
* ``forward_images_per_s``: the compiled forward alone (resize to the
  network input, network, upsampling, argmax), median of ``--calls`` calls
  after one warm-up, and ``forward_cpu_s_per_batch`` the process CPU time
  of one call (what a shared machine's wall time hides);
* ``end_to_end_images_per_s``: a whole ``predict_all`` over the folder
  (decoding, the forward, PNG encoding of every output file; compile
  included, as a user sees it).

The last line is one JSON object.
"""

from __future__ import annotations

import os
import tempfile
import time

import _report
import numpy as np


def make_run(workdir: str, depth: int, height: int, width: int) -> None:
  """A checkpoint of a random ``model_config("ssl")`` net at step 0."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.models import joint  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  config = common.mlc.ConfigDict()
  config.mode = "ssl"
  config.model = common.model_config("ssl", encoder_depth=depth)
  config.loss = common.sde_loss_config(frame_offsets=(0,))
  config.data = common.mlc.ConfigDict(
      {"val": {"image_size": (height, width), "crop_size": ()}})
  model = joint.from_config(config.model)
  x = jnp.zeros((1, 1, 64, 64, 3), jnp.float32)
  v = jax.jit(lambda: model.init({"params": jax.random.PRNGKey(0),
                                  "dropout": jax.random.PRNGKey(0)},
                                 x, (0,), train=False))()
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(0, {"step": jnp.zeros((), jnp.int32), "params": v["params"],
                "batch_stats": v["batch_stats"]}, None, config)
  ckpt.wait()
  ckpt.close()


def main(argv=None) -> None:
  p = _report.parser(__doc__)
  p.add_argument("--depth", type=int, default=101)
  p.add_argument("--height", type=int, default=512)
  p.add_argument("--width", type=int, default=1024)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--images", type=int, default=4)
  p.add_argument("--calls", type=int, default=3)
  p.add_argument("--resolution", default="resize")
  args = _report.parse(p, argv, quiet=True)
  import jax  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from configs import predict as predict_config  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.predict import inputs  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.predict import predict  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.predict import runs  # pylint: disable=g-import-not-at-top

  tmp = tempfile.mkdtemp()
  run_dir, img_dir = os.path.join(tmp, "run"), os.path.join(tmp, "images")
  make_run(run_dir, args.depth, args.height, args.width)
  os.makedirs(img_dir)
  rs = np.random.RandomState(0)
  for i in range(args.images):
    Image.fromarray(rs.randint(0, 256, (args.height, args.width, 3),
                               dtype=np.uint8)).save(
                                   os.path.join(img_dir, f"{i:04d}.jpg"),
                                   quality=90)
  run = runs.load(run_dir)
  config = predict_config.get_config(f"run={run_dir},input={img_dir}")
  pc = config.predict
  pc.batch_size, pc.resolution = args.batch, args.resolution
  settings = dict(predict.run_settings(run, pc), resolution=pc.resolution)
  predictor = predict.Predictor(run, settings, args.batch)
  batch = [np.asarray(Image.open(os.path.join(img_dir, "0000.jpg")))] * \
      args.batch
  t = time.perf_counter()
  predictor(batch)
  compile_s = time.perf_counter() - t
  cpu0 = time.process_time()
  times = _report.timed(lambda _: predictor(batch), args.calls, 0)
  cpu_s = (time.process_time() - cpu0) / args.calls
  fwd = args.batch / float(np.median(times))
  found = inputs.list_inputs(img_dir)
  t = time.perf_counter()
  summary = predict.predict_all(run, found, os.path.join(tmp, "out"), pc)
  e2e_s = time.perf_counter() - t
  result = dict(
      depth=args.depth, height=args.height, width=args.width,
      batch=args.batch, resolution=args.resolution,
      devices=f"{jax.device_count()} x {jax.devices()[0].platform}",
      compile_plus_first_call_s=round(compile_s, 2),
      forward_s_per_batch=round(float(np.median(times)), 3),
      forward_images_per_s=round(fwd, 3),
      # CPU seconds (all threads) per batch: on a shared machine the wall
      # time above includes waiting for cores.
      forward_cpu_s_per_batch=round(cpu_s, 2),
      end_to_end_images=summary["predicted"],
      end_to_end_s=round(e2e_s, 2),
      end_to_end_images_per_s=round(summary["predicted"] / e2e_s, 3))
  _report.print_fields(result)
  _report.emit_json(result)


if __name__ == "__main__":
  main()
