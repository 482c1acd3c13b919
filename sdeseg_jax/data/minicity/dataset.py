r"""MiniCity datasets: rendering views and writing them in a real layout.

No real dataset can be downloaded for tests and demos, so MiniCity renders a
procedural 3-D street world (road, sidewalks, facades, walls, fences, poles,
traffic lights and signs, trees, terrain, sky, people, riders and all vehicle
classes) with a vectorised numpy ray caster, and writes it in the folder
layouts and file encodings of Cityscapes, GTA5 and SYNTHIA-RAND-CITYSCAPES.
The same readers therefore serve real data and MiniCity.

Usage::

  python -m sdeseg_jax.data.minicity --out /tmp/mc --layout cityscapes \
      --seed 0 [--width 256 --height 128 --train-sequences 24 \
      --val-sequences 6 --frames 3 --contact-sheet sheet.png --workers 2]
  python -m sdeseg_jax.data.minicity stats /tmp/mc

or ``generate(out_dir, layout, seed, ...)`` from Python.

Sequences follow Cityscapes snippets: 30 frames (0..29), frame 19 annotated.
``frames_per_sequence`` frames centred on 19 are rendered (default 3: frames
18, 19, 20). The ``cityscapes`` layout is the target domain (car camera at
1.2-1.5 m, near-zero pitch and roll); ``gta5`` and ``synthia`` are source
domains with another look, their own intrinsics, and cameras at 1-3 m with
pitch within +-10 degrees, plus pedestrian and facade-facing views. The scene
is static (nothing moves but the camera) and all shading is fixed to world
coordinates, so neighbouring frames agree photometrically.

Files (``<split>`` is train or val; ids are zero-padded as shown):

* cityscapes:
  ``leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png``
  (annotated frames), ``leftImg8bit_sequence/<split>/<city>/...`` (every
  rendered frame, same naming), ``gtFine/<split>/<city>/<stem>_gtFine_
  labelIds.png`` (uint8 Cityscapes *label* ids) and ``_gtFine_color.png``
  (RGBA colours), ``camera/<split>/<city>/<stem>_camera.json`` (Cityscapes
  camera schema, intrinsics in pixels of the written image; annotated frames),
  ``disparity/<split>/<city>/<stem>_disparity.png`` (annotated frames) and
  ``disparity_sequence/...`` (every frame): uint16, ``p = d * 256 + 1`` with
  ``d = baseline * fx / depth``, 0 = invalid (sky). ``<seq>`` counts the
  sequences of one city; cities are assigned round robin.
* gta5: ``images/<id:05d>.png`` and ``labels/<id:05d>.png`` (mode "P" whose
  indices are Cityscapes label ids, Cityscapes palette), one per annotated
  frame, ids from 1, train sequences first; sequences as
  ``sequences/<split>/img/<seq:03d>/<seq:03d>_<frame + 1:05d>.png`` (the
  annotated frame has id 20, ``id % 10 == 0`` as in GTASeq).
* synthia: ``RGB/<id:07d>.png`` and ``synthia_mapped_to_cityscapes/
  <id:07d>.png`` (uint8 Synthia class ids), ids from 0, train first;
  sequences as ``video/<seq:03d>/<frame + 1:06d>.png`` (seq counts over
  train then val).
* all layouts: ``depth/<path of the sequence frame>`` for every rendered
  frame: uint16 PNG, z-depth in metres = value / 256 (the KITTI encoding),
  0 = invalid (sky, or farther than 255.99 m).

Sidecar ``minicity.json`` at the root (keys sorted)::

  generator: "sdeseg_jax.data.minicity", version: str, layout: str,
  seed: int, width: int, height: int,
  intrinsics: {fx, fy, cx, cy}  # pixels of the written images; pixel
                                # centres at integer coordinates
  camera_convention: str, depth_encoding: {file, scale, invalid},
  disparity_encoding: {...} (cityscapes only), baseline: float,
  sequence_length: 30, annotated_frame: 19, frames_per_sequence: int,
  frames: [ {split, sequence, city (cityscapes only, else null),
             frame, annotated: bool, view: "car" | "pedestrian" | "facade",
             image: path of the sequence frame, depth: path,
             annotated_image: path | null, label: path | null,
             disparity: path | null, camera_json: path | null,
             pose: 16 floats (4x4 camera-to-world, row-major),
             camera_height: m, camera_pitch: rad (+ = down),
             camera_roll: rad} ... ]  # sorted by split, sequence, frame
  stats: {class_names, pixel_frequency, frame_frequency, num_annotated,
          void_pixel_fraction}  # over annotated frames, train ids

Paths are relative to the root. Camera axes are OpenCV (x right, y down,
z forward); world axes are x left, y up, z along the street, so ground is
``y = 0`` and the camera height is ``pose[1][3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

from sdeseg_jax import errors
from sdeseg_jax.data import labels as L
from sdeseg_jax.data.minicity import renderer as mr
from sdeseg_jax.data.minicity import shaders
from sdeseg_jax.data.minicity import world as mw

VERSION = "1.0"
LAYOUTS = ("cityscapes", "gta5", "synthia")
SIDECAR = "minicity.json"
ANNOTATED_FRAME = mw.ANNOTATED_FRAME
SEQUENCE_LENGTH = mw.SEQUENCE_LENGTH
BASELINE = 0.209313  # Cityscapes stereo baseline (m).
DEPTH_SCALE = 256.0  # depth PNG value = round(depth_m * 256).
CITIES = {
    "train": ("aachen", "bremen", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
}
# Intrinsics normalised by image width / height (the reference's defaults).
NORMALIZED_INTRINSICS = {
    "cityscapes": (1131.26 / 1024, 1132.65 / 512, 548.49 / 1024,
                   256.57 / 512),
    "gta5": (1.206285, 2.144507, 0.5, 0.5),
    "synthia": (532.740352 / 1280, 532.740352 / 760, 0.5, 0.5),
}
_PNG_LEVEL = 6


@dataclasses.dataclass(frozen=True)
class Frame:
  """One rendered frame.

  Attributes:
    image: [H, W, 3] uint8 RGB.
    label_ids: [H, W] uint8 Cityscapes label ids.
    depth: [H, W] float32 z-depth in metres, 0 where invalid (sky).
  """
  image: np.ndarray
  label_ids: np.ndarray
  depth: np.ndarray


def intrinsics(layout: str, width: int, height: int) -> np.ndarray:
  """[3, 3] float64 pinhole matrix of a layout at the given image size."""
  _check_layout(layout)
  fx, fy, cx, cy = NORMALIZED_INTRINSICS[layout]
  return np.array([[fx * width, 0.0, cx * width],
                   [0.0, fy * height, cy * height], [0.0, 0.0, 1.0]])


def _check_layout(layout):
  if layout not in LAYOUTS:
    raise ValueError(f"unknown MiniCity layout {layout!r}; expected one of "
                     f"{LAYOUTS}")


# Rotated-grid 4x supersampling offsets (pixels) for anti-aliased edges.
_AA_OFFSETS = np.array([[-0.125, -0.375], [0.375, -0.125], [0.125, 0.375],
                        [-0.375, 0.125]])


def _shade_rays(world, domain, pose, k, depth, prim, dirs):
  """Linear RGB [N, 3] and world points [N, 3] of cast rays [N]."""
  hit = prim != mr.SKY
  salt = 1000 * domain.index
  rgb = np.zeros((len(prim), 3), np.float32)
  pts = np.zeros((len(prim), 3), np.float32)
  pts[hit] = pose[:3, 3][None].astype(np.float32) + depth[hit, None] * dirs[
      hit]
  nrm = mr.normals(world, prim[hit], pts[hit]).astype(np.float32)
  # Metres seen by one pixel: larger far away and at grazing angles.
  dh = dirs[hit]
  cos = np.abs((nrm * dh).sum(1)) / np.linalg.norm(dh, axis=1)
  foot = depth[hit] / float(np.sqrt(k[0, 0] * k[1, 1])) / np.maximum(cos, 0.2)
  alb = shaders.albedo(world, domain.style, prim[hit], pts[hit], nrm, salt, foot)
  # Cast shadows on the ground plane and on horizontal tops near it.
  ph = pts[hit]
  flat = (nrm[:, 1] > 0.9) & (ph[:, 1] < 0.2)
  sun_vis = np.ones(len(ph), np.float32)
  occ = np.ones(len(ph), np.float32)
  sun_vis[flat], occ[flat] = mr.ground_shadows(world, domain.style, ph[flat])
  rgb[hit] = mr.shade(domain.style, alb, nrm, sun_vis, occ)
  rgb[~hit] = mr.sky_color(domain.style, dirs[~hit], salt)
  return rgb, pts


def render(world: mr.FrozenWorld, domain: mw.Domain, pose: np.ndarray,
           k: np.ndarray, width: int, height: int,
           antialias: bool = True) -> Frame:
  """Renders one view of a world.

  Labels and depth come from the ray through each pixel centre. Pixels on an
  object boundary or a strong colour edge get their colour averaged over 4
  sub-pixel rays, as a camera integrates over its pixel area.

  Args:
    world: the scene.
    domain: look and label conventions.
    pose: [4, 4] camera-to-world.
    k: [3, 3] intrinsics.
    width: W.
    height: H.
    antialias: supersample edge pixels.

  Returns:
    The frame's image, label ids and depth.
  """
  depth, prim, dirs = mr.cast(world, pose, k, width, height)
  depth, prim = depth.reshape(-1), prim.reshape(-1)
  dirs = dirs.reshape(-1, 3)
  rgb, pts = _shade_rays(world, domain, pose, k, depth, prim, dirs)
  hit = prim != mr.SKY
  if antialias:
    p2 = prim.reshape(height, width)
    lum = rgb.mean(1).reshape(height, width)
    edge = np.zeros((height, width), bool)
    for a, b in ((np.s_[:, 1:], np.s_[:, :-1]), (np.s_[1:, :], np.s_[:-1, :])):
      e = (p2[a] != p2[b]) | (np.abs(lum[a] - lum[b]) > 0.06)
      edge[a] |= e
      edge[b] |= e
    idx = np.flatnonzero(edge)
    if len(idx):
      uv = np.stack([idx % width, idx // width], 1).astype(np.float64)
      sub = (uv[:, None, :] + _AA_OFFSETS[None]).reshape(-1, 2)
      sd, sp, sdir = mr.cast(world, pose, k, width, height, uv=sub)
      srgb, _ = _shade_rays(world, domain, pose, k, sd, sp, sdir)
      rgb[idx] = srgb.reshape(len(idx), len(_AA_OFFSETS), 3).mean(1)
  lab = np.full(len(prim), mw.SKY, np.uint8)
  ph = prim[hit]
  lab_hit = world.label[np.maximum(ph, 0)].astype(np.uint8)
  ground = ph == mr.GROUND
  road = np.abs(pts[hit, 0]) < world.road_half_width
  lab_hit[ground] = np.where(road[ground], mw.ROAD, world.ground_outer_label)
  lab[hit] = lab_hit
  d = np.where(hit, depth, 0.0).astype(np.float32)
  return Frame(image=mr.finish(domain.style, rgb).reshape(height, width, 3),
               label_ids=lab.reshape(height, width),
               depth=d.reshape(height, width))


def rendered_frames(frames_per_sequence: int) -> list[int]:
  """Frame numbers rendered per sequence: a window centred on frame 19."""
  n = int(frames_per_sequence)
  if not 1 <= n <= SEQUENCE_LENGTH:
    raise ValueError(f"frames_per_sequence must be in [1, {SEQUENCE_LENGTH}]"
                     f", got {frames_per_sequence}")
  start = max(0, min(ANNOTATED_FRAME - (n - 1) // 2, SEQUENCE_LENGTH - n))
  return list(range(start, start + n))


# ------------------------------------------------------------ encodings ---


def encode_depth(depth: np.ndarray) -> np.ndarray:
  """Metres [H, W] -> uint16 value/256 encoding; 0 = invalid."""
  v = np.round(depth.astype(np.float64) * DEPTH_SCALE)
  v[(depth <= 0) | ~np.isfinite(depth) | (v > 65535)] = 0
  return v.astype(np.uint16)


def decode_depth(png: np.ndarray) -> np.ndarray:
  """uint16 depth PNG values [H, W] -> float32 metres (0 = invalid)."""
  return (png.astype(np.float32) / DEPTH_SCALE).astype(np.float32)


def encode_disparity(depth: np.ndarray, fx: float,
                     baseline: float = BASELINE) -> np.ndarray:
  """Metres -> Cityscapes disparity PNG values (uint16, 0 = invalid)."""
  valid = (depth > 0) & np.isfinite(depth)
  disp = np.where(valid, baseline * fx / np.where(valid, depth, 1.0), 0.0)
  p = np.round(disp * 256.0) + 1.0
  return np.where(valid, np.clip(p, 1, 65535), 0).astype(np.uint16)


def decode_disparity(png: np.ndarray, fx: float,
                     baseline: float = BASELINE) -> np.ndarray:
  """Cityscapes disparity PNG values -> depth metres (0 = invalid)."""
  p = png.astype(np.float64)
  disp = (p - 1.0) / 256.0
  valid = (p > 0) & (disp > 0)
  return np.where(valid, baseline * fx / np.where(valid, disp, 1.0),
                  0.0).astype(np.float32)


def _save_png(root, rel, array, palette=None):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  im = Image.fromarray(array)
  if palette is not None:
    im.putpalette(palette.reshape(-1).tolist())
  im.save(path, format="PNG", compress_level=_PNG_LEVEL)


def _save_json(root, rel, obj):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


# --------------------------------------------------------------- layouts ---


def _paths(layout, split, seq_in_split, seq_global, frame, ann_index):
  """Relative paths of one frame: dict with image, annotated_image, label,
  disparity, disparity_sequence, camera_json, color (None where absent)."""
  ann = frame == ANNOTATED_FRAME
  out = dict(annotated_image=None, label=None, disparity=None,
             camera_json=None, color=None, disparity_sequence=None,
             city=None)
  if layout == "cityscapes":
    cities = CITIES[split]
    city = cities[seq_in_split % len(cities)]
    stem = f"{city}_{seq_in_split // len(cities):06d}_{frame:06d}"
    d = f"{split}/{city}"
    out["city"] = city
    out["image"] = f"leftImg8bit_sequence/{d}/{stem}_leftImg8bit.png"
    out["disparity_sequence"] = f"disparity_sequence/{d}/{stem}_disparity.png"
    if ann:
      out["annotated_image"] = f"leftImg8bit/{d}/{stem}_leftImg8bit.png"
      out["label"] = f"gtFine/{d}/{stem}_gtFine_labelIds.png"
      out["color"] = f"gtFine/{d}/{stem}_gtFine_color.png"
      out["disparity"] = f"disparity/{d}/{stem}_disparity.png"
      out["camera_json"] = f"camera/{d}/{stem}_camera.json"
  elif layout == "gta5":
    out["image"] = (f"sequences/{split}/img/{seq_in_split:03d}/"
                    f"{seq_in_split:03d}_{frame + 1:05d}.png")
    if ann:
      out["annotated_image"] = f"images/{ann_index + 1:05d}.png"
      out["label"] = f"labels/{ann_index + 1:05d}.png"
  else:
    out["image"] = f"video/{seq_global:03d}/{frame + 1:06d}.png"
    if ann:
      out["annotated_image"] = f"RGB/{ann_index:07d}.png"
      out["label"] = f"synthia_mapped_to_cityscapes/{ann_index:07d}.png"
  out["depth"] = "depth/" + out["image"]
  return out


def _camera_json(k, height_m, pitch, roll):
  return {
      "extrinsic": {"baseline": BASELINE, "pitch": float(pitch),
                    "roll": float(roll), "yaw": 0.0, "x": 0.0, "y": 0.0,
                    "z": float(height_m)},
      "intrinsic": {"fx": float(k[0, 0]), "fy": float(k[1, 1]),
                    "u0": float(k[0, 2]), "v0": float(k[1, 2])},
  }


def _write_frame(root, layout, paths, frame: Frame, k, traj, f):
  _save_png(root, paths["image"], frame.image)
  _save_png(root, paths["depth"], encode_depth(frame.depth))
  if layout == "cityscapes":
    _save_png(root, paths["disparity_sequence"],
              encode_disparity(frame.depth, k[0, 0]))
  if paths["annotated_image"] is None:
    return
  _save_png(root, paths["annotated_image"], frame.image)
  if layout == "cityscapes":
    _save_png(root, paths["label"], frame.label_ids)
    color = np.concatenate([L.LABEL_ID_PALETTE[frame.label_ids],
                            np.full(frame.label_ids.shape + (1,), 255,
                                    np.uint8)], -1)
    _save_png(root, paths["color"], color)
    _save_png(root, paths["disparity"],
              encode_disparity(frame.depth, k[0, 0]))
    _save_json(root, paths["camera_json"],
               _camera_json(k, traj.height, traj.pitch[f], traj.roll[f]))
  elif layout == "gta5":
    _save_png(root, paths["label"], frame.label_ids,
              palette=L.LABEL_ID_PALETTE)
  else:
    _save_png(root, paths["label"],
              L.CITYSCAPES_ID_TO_SYNTHIA_ID_LUT[frame.label_ids])


# ---------------------------------------------------------------- stats ---


class _Stats:
  """Per-class pixel and frame frequencies over annotated frames."""

  def __init__(self):
    self.pixels = np.zeros(L.NUM_CLASSES + 1, np.int64)  # last: void
    self.frames = np.zeros(L.NUM_CLASSES, np.int64)
    self.n = 0

  def add(self, label_ids):
    t = L.cityscapes_to_train_ids(label_ids).astype(np.int64)
    t[t == L.IGNORE_INDEX] = L.NUM_CLASSES
    c = np.bincount(t.reshape(-1), minlength=L.NUM_CLASSES + 1)
    self.pixels += c
    self.frames += c[:L.NUM_CLASSES] > 0
    self.n += 1

  def result(self):
    total = max(int(self.pixels.sum()), 1)
    return {
        "class_names": list(L.CLASS_NAMES),
        "pixel_frequency": [round(float(x) / total, 6)
                            for x in self.pixels[:L.NUM_CLASSES]],
        "frame_frequency": [round(float(x) / max(self.n, 1), 6)
                            for x in self.frames],
        "void_pixel_fraction": round(float(self.pixels[-1]) / total, 6),
        "num_annotated": self.n,
    }


def format_stats(stats: dict) -> str:
  """A table of per-class pixel and frame frequencies."""
  lines = [f"{'class':<14}{'pixels %':>10}{'frames %':>10}"]
  for name, p, f in zip(stats["class_names"], stats["pixel_frequency"],
                        stats["frame_frequency"]):
    lines.append(f"{name:<14}{100 * p:>10.2f}{100 * f:>10.1f}")
  lines.append(f"{'(void)':<14}{100 * stats['void_pixel_fraction']:>10.2f}")
  lines.append(f"annotated frames: {stats['num_annotated']}")
  return "\n".join(lines)


# ----------------------------------------------------------- generation ---


def sequence_rng(seed: int, layout: str, split: str, index: int):
  """The generator of one sequence: independent of every other sequence."""
  return np.random.default_rng(
      [int(seed), mw.DOMAINS[layout].index, ("train", "val").index(split),
       int(index)])


def generate(out_dir: str, layout: str, seed: int = 0, *, width: int = 256,
             height: int = 128, num_train_sequences: int = 24,
             num_val_sequences: int = 6, frames_per_sequence: int = 3,
             contact_sheet: str | None = None, overwrite: bool = False,
             workers: int = 1,
             log: Callable[[str], Any] | None = print) -> dict:
  """Renders a MiniCity dataset.

  Args:
    out_dir: dataset root; must be empty or absent (or a MiniCity root when
      `overwrite`).
    layout: "cityscapes", "gta5" or "synthia".
    seed: generation seed; equal seeds give byte-identical files.
    width: image width W in pixels.
    height: image height H in pixels.
    num_train_sequences: sequences in the train split.
    num_val_sequences: sequences in the val split.
    frames_per_sequence: rendered frames per sequence, centred on frame 19.
    contact_sheet: optional PNG path of an overview of annotated frames.
    overwrite: replace an existing MiniCity dataset at `out_dir`.
    workers: processes rendering sequences in parallel (output is the same
      for any number).
    log: progress printer, or None for silence.

  Returns:
    The sidecar dictionary (also written to `out_dir/minicity.json`).
  """
  _check_layout(layout)
  if width < 8 or height < 8:
    raise ValueError(f"image size must be at least 8x8, got {width}x{height}")
  if num_train_sequences < 0 or num_val_sequences < 0:
    raise ValueError("sequence counts must be >= 0")
  frames = rendered_frames(frames_per_sequence)
  _prepare_dir(out_dir, overwrite)
  log = log or (lambda s: None)
  k = intrinsics(layout, width, height)
  splits = [("train", i) for i in range(num_train_sequences)] + [
      ("val", i) for i in range(num_val_sequences)]
  jobs = [(out_dir, layout, int(seed), split, i, g, frames, width, height,
           bool(contact_sheet)) for g, (split, i) in enumerate(splits)]
  records, stats, sheet = [], _Stats(), []
  t0 = time.time()
  with contextlib.ExitStack() as stack:
    if workers > 1 and len(jobs) > 1:
      # Sequences are independent (own seed, own files), so the output does
      # not depend on the number of workers.
      pool = stack.enter_context(
          multiprocessing.get_context("spawn").Pool(workers))
      results = pool.imap(_render_sequence, jobs)
    else:
      results = map(_render_sequence, jobs)
    for g, (recs, ann_labels, ann_frame) in enumerate(results):
      records.extend(recs)
      stats.add(ann_labels)
      if ann_frame is not None and len(sheet) < 12:
        sheet.append(ann_frame)
      log(f"[minicity {layout}] sequence {g + 1}/{len(splits)} "
          f"({recs[0]['split']}) view={recs[0]['view']} "
          f"{time.time() - t0:.1f}s")
  sidecar = {
      "generator": "sdeseg_jax.data.minicity", "version": VERSION,
      "layout": layout, "seed": int(seed), "width": int(width),
      "height": int(height),
      "intrinsics": {"fx": float(k[0, 0]), "fy": float(k[1, 1]),
                     "cx": float(k[0, 2]), "cy": float(k[1, 2])},
      "camera_convention": (
          "pose: 4x4 camera-to-world, row-major; camera axes OpenCV (x "
          "right, y down, z forward); world x left, y up, z along the "
          "street; ground plane y = 0; pixel centres at integer "
          "coordinates"),
      "depth_encoding": {"file": "uint16 PNG", "scale": DEPTH_SCALE,
                         "invalid": 0,
                         "meaning": "z-depth metres = value / scale"},
      "disparity_encoding": (
          {"file": "uint16 PNG", "meaning":
           "disparity = (value - 1) / 256 = baseline * fx / depth",
           "invalid": 0} if layout == "cityscapes" else None),
      "baseline": BASELINE,
      "sequence_length": SEQUENCE_LENGTH,
      "annotated_frame": ANNOTATED_FRAME,
      "frames_per_sequence": len(frames),
      "num_train_sequences": int(num_train_sequences),
      "num_val_sequences": int(num_val_sequences),
      "frames": records,
      "stats": stats.result(),
  }
  _save_json(out_dir, SIDECAR, sidecar)
  log(f"[minicity {layout}] {len(records)} frames in "
      f"{time.time() - t0:.1f}s -> {out_dir}")
  log(format_stats(sidecar["stats"]))
  if contact_sheet:
    write_contact_sheet(contact_sheet, sheet)
    log(f"[minicity {layout}] contact sheet -> {contact_sheet}")
  return sidecar


def _render_sequence(job):
  """Renders and writes one sequence.

  Returns:
    (sidecar records of its frames, [H, W] label ids of the annotated frame,
    the annotated Frame if a contact sheet is wanted else None).
  """
  (out_dir, layout, seed, split, i, g, frames, width, height, want) = job
  domain = mw.DOMAINS[layout]
  k = intrinsics(layout, width, height)
  rng = sequence_rng(seed, layout, split, i)
  street = mw.sample_street(rng)
  traj = mw.sample_trajectory(rng, domain, street)
  world = mw.build_world(rng, domain, street, traj)
  records, ann_labels, ann_frame = [], None, None
  for f in frames:
    fr = render(world, domain, traj.poses[f], k, width, height)
    paths = _paths(layout, split, i, g, f, g)
    _write_frame(out_dir, layout, paths, fr, k, traj, f)
    ann = f == ANNOTATED_FRAME
    if ann:
      ann_labels = fr.label_ids
      ann_frame = fr if want else None
    records.append({
        "split": split, "sequence": i, "city": paths["city"], "frame": f,
        "annotated": ann, "view": traj.view, "image": paths["image"],
        "depth": paths["depth"],
        "annotated_image": paths["annotated_image"],
        "label": paths["label"], "disparity": paths["disparity"],
        "disparity_sequence": paths["disparity_sequence"],
        "camera_json": paths["camera_json"],
        "pose": [float(x) for x in traj.poses[f].reshape(-1)],
        "camera_height": float(traj.height),
        "camera_pitch": float(traj.pitch[f]),
        "camera_roll": float(traj.roll[f]),
    })
  return records, ann_labels, ann_frame


def _prepare_dir(out_dir, overwrite):
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    if not overwrite:
      raise FileExistsError(
          f"MiniCity output directory {out_dir!r} is not empty; pass "
          "overwrite=True (--overwrite) to replace a MiniCity dataset")
    if not os.path.isfile(os.path.join(out_dir, SIDECAR)):
      raise FileExistsError(
          f"refusing to overwrite {out_dir!r}: it has no {SIDECAR}, so it is "
          "not a MiniCity dataset")
    shutil.rmtree(out_dir)
  os.makedirs(out_dir, exist_ok=True)


def generate_from_config(config, out_dir: str, **kwargs) -> dict:
  """`generate` with the settings of `configs.common.minicity_config()`."""
  return generate(out_dir, config.layout, config.seed, width=config.width,
                  height=config.height,
                  num_train_sequences=config.num_train_sequences,
                  num_val_sequences=config.num_val_sequences,
                  frames_per_sequence=config.frames_per_sequence, **kwargs)


def load_sidecar(root: str) -> dict:
  """Reads `root/minicity.json`, with a clear error if it is missing."""
  path = os.path.join(root, SIDECAR)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no MiniCity sidecar; generate one with "
                            "python -m sdeseg_jax.data.minicity")
  with open(path) as f:
    return json.load(f)


# -------------------------------------------------------- contact sheet ---


def colorize_depth(depth: np.ndarray, max_depth: float = 80.0) -> np.ndarray:
  """[H, W] metres -> [H, W, 3] uint8 (near bright, far dark, invalid black)."""
  valid = depth > 0
  x = np.clip(1.0 - np.log1p(depth) / math.log1p(max_depth), 0.0, 1.0)
  rgb = np.stack([x**0.7, x**1.5, 0.3 + 0.7 * x**3], -1) * valid[..., None]
  return np.round(rgb * 255).astype(np.uint8)


def write_contact_sheet(path: str, frames: list[Frame]):
  """Writes rows of (image, colourised labels, depth) for `frames`."""
  if not frames:
    raise ValueError("no frames for the contact sheet")
  rows = []
  for fr in frames:
    lab = L.colorize_train_ids(L.cityscapes_to_train_ids(fr.label_ids))
    rows.append(np.concatenate([fr.image, lab, colorize_depth(fr.depth)], 1))
  sheet = np.concatenate(rows, 0)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(sheet).save(path, format="PNG")


# ------------------------------------------------------------------- CLI ---


@errors.cli_main
def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "stats":
    p = argparse.ArgumentParser(
        prog="python -m sdeseg_jax.data.minicity stats",
        description="Per-class pixel/frame frequencies of a MiniCity root.")
    p.add_argument("root")
    a = p.parse_args(argv[1:])
    print(format_stats(load_sidecar(a.root)["stats"]))
    return 0
  p = argparse.ArgumentParser(
      prog="python -m sdeseg_jax.data.minicity",
      description="Render a MiniCity dataset (see the module docstring).")
  p.add_argument("--out", required=True, help="dataset root to create")
  p.add_argument("--layout", required=True, choices=LAYOUTS)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--width", type=int, default=256)
  p.add_argument("--height", type=int, default=128)
  p.add_argument("--train-sequences", type=int, default=24)
  p.add_argument("--val-sequences", type=int, default=6)
  p.add_argument("--frames", type=int, default=3,
                 help="rendered frames per sequence, centred on frame 19")
  p.add_argument("--contact-sheet", default=None,
                 help="PNG path of an overview of annotated frames")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                 help="parallel processes (output does not depend on it)")
  p.add_argument("--quiet", action="store_true")
  a = p.parse_args(argv)
  # A wrong argument or output folder raises; errors.cli_main reports it
  # as one line with exit code 1.
  generate(a.out, a.layout, a.seed, width=a.width, height=a.height,
           num_train_sequences=a.train_sequences,
           num_val_sequences=a.val_sequences, frames_per_sequence=a.frames,
           contact_sheet=a.contact_sheet, overwrite=a.overwrite,
           workers=a.workers, log=None if a.quiet else print)
  return 0


