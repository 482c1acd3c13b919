r"""How often do mixing masks respect the scene geometry? (MiniCity)

  python benchmarks/depthmix_geometry.py [--sde_steps 300] [--images 64]

For pairs of MiniCity training images (i, partner j = i ^ 1, as in the SSL
step) every mask M_i decides, per pixel, whether the mixed image shows image
i's surface (M = 1) or j's (M = 0). With the rendered ground-truth depth we
count how often the shown surface is the truly nearer one (depth 0 =
invalid/sky = infinitely far; pixels where both are equally far are left
out). Masks:

* ``depthmix_sde``: DepthMix (margin 0.03) on the min-max normalised
  disparity of a small SDE model trained here for ``--sde_steps`` steps
  (mode sde on the same MiniCity);
* ``depthmix_gt``: DepthMix on the normalised ground-truth disparity (an
  oracle: its errors come only from the margin);
* ``classmix``: ClassMix of the ground-truth labels (half the classes of
  image i pasted, whatever their depth);
* ``cutmix``: a random half-area box (geometry-blind reference).

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import os
import tempfile
import time

import _report
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from configs import sde_minicity
from sdeseg_jax.data import minicity
from sdeseg_jax.data import pipeline
from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import consistency
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import sde


def nearer_fraction(mask: np.ndarray, depth: np.ndarray) -> dict:
  """Fraction of pixels whose shown surface is the truly nearer one.

  Args:
    mask: [B, H, W] in {0, 1} (1 = image i's pixel).
    depth: [B, H, W] GT depth in metres, 0 = invalid (far).

  Returns:
    ``{"nearer": fraction over decidable pixels, "pasted_nearer": the same
    over pixels taken from the partner, "pasted": share of those pixels}``.
  """
  d = np.where(depth > 0, depth, np.inf)
  partner = np.arange(len(d)) ^ 1
  dj = d[partner]
  decidable = d != dj
  i_nearer = d < dj
  shows_i = mask > 0.5
  correct = (shows_i == i_nearer) & decidable
  pasted = ~shows_i & decidable
  return {"nearer": float(correct.sum() / decidable.sum()),
          "pasted_nearer": float((correct & pasted).sum() /
                                 max(pasted.sum(), 1)),
          "pasted": float((~shows_i).mean())}


def train_sde(root: str, data: str, args) -> dict:
  """Trains the small SDE model; returns its variables."""
  config = sde_minicity.get_config(
      f"steps={args.sde_steps},height={args.height},"
      f"image_width={args.width},sequences={args.sequences}")
  config.data.tfds_dir = os.path.join(root, "tfds")
  config.data.train.path = data
  config.data.val.path = data
  config.eval.split = ""
  config.train.update(log_every=100, checkpoint_every=args.sde_steps)
  workdir = os.path.join(root, "sde")
  sde.run(config, workdir)
  return ckpt_lib.load_variables(workdir), config


def main(argv=None):
  p = _report.parser(__doc__, first_line=False)
  p.add_argument("--sde_steps", type=int, default=300)
  p.add_argument("--images", type=int, default=64)
  p.add_argument("--sequences", type=int, default=32)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--workdir", default="")
  args = _report.parse(p, argv, absl=True, quiet=True)
  root = args.workdir or tempfile.mkdtemp(prefix="depthmix_geometry_")
  data = os.path.join(root, "minicity")
  if not os.path.isfile(os.path.join(data, "minicity.json")):
    minicity.generate(data, "cityscapes", 0, width=args.width,
                      height=args.height, num_train_sequences=args.sequences,
                      num_val_sequences=2, log=None)
  t0 = time.time()
  variables, sde_config = train_sde(root, data, args)
  sde_secs = time.time() - t0
  task = sde.SDETask(sde_config)
  predict = jax.jit(lambda v, b: task.predict(v, b)["disp"])
  stream = common.stream_config(
      "minicity_geom", "cityscapes", path=data, frame_offsets=(0,),
      image_size=(args.height, args.width), crop_size=(), with_depth=True,
      full_res=(args.width, args.height), num_workers=0)
  loader = pipeline.make_loader(
      stream, split="train", global_batch_size=2, seed=0, train=True,
      data_dir=os.path.join(root, "tfds"))
  v = {"params": variables["params"],
       "batch_stats": variables["batch_stats"]}
  sums = {}
  rng = jax.random.PRNGKey(0)
  for k in range(args.images // 2):
    b = next(loader)
    depth = np.asarray(b["depth"])
    disp_sde = np.asarray(predict(v, {"color": b["color"]}))[..., 0]
    partner = masks_lib.pair_partner_index(2)
    masks = {
        "depthmix_sde": masks_lib.depth_mix_mask(
            masks_lib.normalize_disparity(disp_sde), partner, 0.03),
        "depthmix_gt": masks_lib.depth_mix_mask(
            consistency.mix_depth("gt", {"depth": depth}), partner, 0.03),
        "classmix": masks_lib.class_mix_mask(
            jnp.asarray(b["label"]), jax.random.fold_in(rng, k)),
        "cutmix": masks_lib.cut_mix_mask(jax.random.fold_in(rng, 10**6 + k),
                                         depth.shape, 0.5),
    }
    for name, m in masks.items():
      r = nearer_fraction(np.asarray(m), depth)
      for key, val in r.items():
        sums.setdefault(name, {}).setdefault(key, []).append(val)
  loader.close()
  res = {n: {k: round(float(np.mean(v)), 4) for k, v in d.items()}
         for n, d in sums.items()}
  print(f"\nMiniCity, {args.images} images ({args.images // 2} pairs) at "
        f"{args.width}x{args.height}; SDE trained {args.sde_steps} steps "
        f"({sde_secs:.0f} s)")
  _report.table(
      [("mask", 14, ""), ("nearer", 8, ".3f"), ("pasted nearer", 14, ".3f"),
       ("pasted", 8, ".3f")],
      [(n, r["nearer"], r["pasted_nearer"], r["pasted"])
       for n, r in res.items()])
  _report.emit_json({"benchmark": "depthmix_geometry",
                     "images": args.images, "sde_steps": args.sde_steps,
                     "size": [args.height, args.width], "results": res})


if __name__ == "__main__":
  main()
