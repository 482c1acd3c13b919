r"""Does Matching Geometry Sampling pick source images with a target camera?

  python benchmarks/mgs_geometry.py [--workdir /tmp/bench_mgs] [--batches 40]
      [--depth gt|pseudo --demo_workdir /tmp/demo]

MiniCity renders the target (cityscapes layout) from a car camera 1.2-1.5 m
high with a small pitch, and the source (gta5 layout) from 1-3 m with pitch
up to +-10 degrees (docs/minicity.md); every sample carries its true
``camera_height``/``camera_pitch``. For each target crop the training stream
delivers ``K = 5`` independently flipped and cropped source candidates
(``sdeseg_jax.data.streams``); the MGS criterion of the SSDA step
(``mixing.geometry_match.select_matching``, paper definition) picks one,
and candidate 0 -- an independent random draw -- is the "random choice"
baseline.

Reported: the fraction of chosen source samples whose camera is
target-like (height *and* pitch inside the target's [min, max] range), the
mean and std of height and pitch (target, random source, MGS source) and
the 1-D Wasserstein distance between the target's and each source choice's
distribution: the shift MGS removes.

``--depth gt`` (default) feeds MGS the rendered depth as inverse depth (an
oracle for the SDE); ``--depth pseudo`` reads the pseudo disparities a demo
run exported (``<demo_workdir>/pseudo_depth/{target,source}``). Ends with
one JSON line.
"""

from __future__ import annotations

import json
import os
import sys

import _report
import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from sdeseg_jax.data import minicity
from sdeseg_jax.data import streams as streams_lib
from sdeseg_jax.mixing import geometry_match

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0


def sigmoid_disp_from_depth(depth: np.ndarray) -> np.ndarray:
  """Inverse of monodepth2's ``disp_to_depth``: the sigmoid output whose
  depth is ``depth`` (invalid 0 -> far, 0)."""
  inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 1.0 / MAX_DEPTH)
  inv = np.clip(inv, 1.0 / MAX_DEPTH, 1.0 / MIN_DEPTH)
  return ((inv - 1.0 / MAX_DEPTH) /
          (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH)).astype(np.float32)


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
  """W1 distance between two 1-D empirical distributions (quantiles)."""
  q = np.linspace(0.0, 1.0, 201)
  return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def summary(x: np.ndarray) -> dict[str, float]:
  m, s = _report.mean_std(x)
  return {"mean": m, "std": s}


def main(argv=None) -> int:
  p = _report.parser(__doc__)
  p.add_argument("--workdir", default="/tmp/bench_mgs")
  p.add_argument("--batches", type=int, default=40)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--sequences", type=int, default=24)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--depth", choices=("gt", "pseudo"), default="gt")
  p.add_argument("--demo_workdir", default="")
  p.add_argument("--criterion", choices=geometry_match.CRITERIA,
                 default="paper")
  a = _report.parse(p, argv, absl=True)
  k = 5
  w, h = a.width, a.height
  roots = {}
  if a.depth == "pseudo":
    if not a.demo_workdir:
      p.error("--depth pseudo needs --demo_workdir (a finished demo run)")
    cfg_path = os.path.join(a.demo_workdir, "stages", "export_source.json")
    if not os.path.isfile(cfg_path):
      p.error(f"{a.demo_workdir} has no exported pseudo depth ({cfg_path})")
    roots = {"target": os.path.join(a.demo_workdir, "data",
                                    "minicity_cityscapes"),
             "source": os.path.join(a.demo_workdir, "data", "minicity_gta5")}
    with open(os.path.join(roots["target"], "minicity.json")) as f:
      side = json.load(f)
    w, h = side["width"], side["height"]
  else:
    for role, layout, seed in (("target", "cityscapes", 0),
                               ("source", "gta5", 1)):
      roots[role] = os.path.join(a.workdir, f"minicity_{layout}_{w}x{h}")
      if not os.path.isfile(os.path.join(roots[role], "minicity.json")):
        minicity.generate(roots[role], layout, seed, width=w, height=h,
                          num_train_sequences=a.sequences,
                          num_val_sequences=2, log=None)
  crop = (h, h)

  def stream(role, layout, **kw):
    s = common.stream_config(
        f"minicity_{layout}" if a.depth == "pseudo" else f"mgs_{layout}",
        layout, path=roots[role], image_size=(h, w), crop_size=crop,
        full_res=(w, h), num_workers=0, num_scales=1, **kw)
    if a.depth == "pseudo":
      s.pseudo_depth_dir = os.path.join(a.demo_workdir, "pseudo_depth", role)
      s.pseudo_depth_encoding = "u16"
      s.frame_offsets = (-1, 0, 1) if layout == "cityscapes" else (0,)
    else:
      s.with_depth = True
    return s

  tgt = stream("target", "cityscapes", load_unlabeled=True)
  src = stream("source", "gta5", val_count=2 if a.depth == "gt" else 6)
  if a.depth == "pseudo":
    src.val_count = json.load(open(os.path.join(
        roots["source"], "minicity.json")))["num_val_sequences"]
  data_dir = os.path.join(a.demo_workdir or a.workdir, "tfds")
  loaders = streams_lib.make_stream_loaders(
      {"target": tgt, "source": src},
      {"target": a.batch_size, "source": a.batch_size}, seed=0,
      data_dir=data_dir, candidates={"source": k})

  @jax.jit
  def choose(td, sd):
    _, idx, dist = geometry_match.select_matching(
        td, sd, {"i": jnp.zeros(sd.shape[:2])}, a.criterion)
    return idx, dist

  rec = {"target_h": [], "target_p": [], "rand_h": [], "rand_p": [],
         "mgs_h": [], "mgs_p": [], "all_h": [], "all_p": []}
  for _ in range(a.batches):
    b = {n: next(l) for n, l in loaders.items()}
    if a.depth == "gt":
      td = sigmoid_disp_from_depth(b["target"]["depth"])
      sd = sigmoid_disp_from_depth(b["source"]["depth"])
    else:
      td, sd = b["target"]["pseudo_depth"], b["source"]["pseudo_depth"]
    idx, _ = jax.device_get(choose(td, sd))
    rows = np.arange(len(idx))
    ch, cp = b["source"]["camera_height"], b["source"]["camera_pitch"]
    rec["target_h"] += list(b["target"]["camera_height"])
    rec["target_p"] += list(b["target"]["camera_pitch"])
    rec["rand_h"] += list(ch[:, 0])
    rec["rand_p"] += list(cp[:, 0])
    rec["mgs_h"] += list(ch[rows, idx])
    rec["mgs_p"] += list(cp[rows, idx])
    rec["all_h"] += list(ch.ravel())
    rec["all_p"] += list(cp.ravel())
  for l in loaders.values():
    l.close()
  r = {k_: np.asarray(v, np.float64) for k_, v in rec.items()}
  if np.isnan(r["target_h"]).any() or np.isnan(r["all_h"]).any():
    raise ValueError("camera_height/pitch missing: these datasets are not "
                     "MiniCity (no minicity.json sidecar)")
  hr = (r["target_h"].min(), r["target_h"].max())
  pr = (r["target_p"].min(), r["target_p"].max())

  def target_like(hs, ps):
    return float(np.mean((hs >= hr[0]) & (hs <= hr[1]) &
                         (ps >= pr[0]) & (ps <= pr[1])))

  def in_range(x, rng_):
    return float(np.mean((x >= rng_[0]) & (x <= rng_[1])))

  out = {"benchmark": "mgs_geometry", "depth": a.depth,
         "criterion": a.criterion, "candidates": k,
         "pairs": int(len(r["mgs_h"])), "image": f"{w}x{h}",
         "crop": f"{crop[0]}x{crop[1]}",
         "target_height_range": list(map(float, hr)),
         "target_pitch_range": list(map(float, pr)),
         "target_like_random": target_like(r["rand_h"], r["rand_p"]),
         "target_like_mgs": target_like(r["mgs_h"], r["mgs_p"]),
         "target_like_best_possible": float(np.mean(
             [target_like(r["all_h"][i * k:(i + 1) * k],
                          r["all_p"][i * k:(i + 1) * k]) > 0
              for i in range(len(r["mgs_h"]))])),
         "height_in_range": {n: in_range(r[f"{n}_h"], hr)
                             for n in ("rand", "mgs", "all")},
         "pitch_in_range": {n: in_range(r[f"{n}_p"], pr)
                            for n in ("rand", "mgs", "all")},
         "height": {n: summary(r[f"{n}_h"]) for n in ("target", "rand",
                                                      "mgs")},
         "pitch": {n: summary(r[f"{n}_p"]) for n in ("target", "rand",
                                                     "mgs")},
         "w1_height_random": wasserstein1(r["target_h"], r["rand_h"]),
         "w1_height_mgs": wasserstein1(r["target_h"], r["mgs_h"]),
         "w1_pitch_random": wasserstein1(r["target_p"], r["rand_p"]),
         "w1_pitch_mgs": wasserstein1(r["target_p"], r["mgs_p"])}
  print(f"target-like source cameras: random {out['target_like_random']:.2f}"
        f", MGS {out['target_like_mgs']:.2f} (at least one of the {k} "
        f"candidates: {out['target_like_best_possible']:.2f})")
  print(f"height in target range: random "
        f"{out['height_in_range']['rand']:.2f}, MGS "
        f"{out['height_in_range']['mgs']:.2f}; pitch: random "
        f"{out['pitch_in_range']['rand']:.2f}, MGS "
        f"{out['pitch_in_range']['mgs']:.2f}")
  print(f"W1(height) target vs random {out['w1_height_random']:.3f} m, vs "
        f"MGS {out['w1_height_mgs']:.3f} m; W1(pitch) "
        f"{out['w1_pitch_random']:.4f} vs {out['w1_pitch_mgs']:.4f} rad")
  _report.emit_json(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
