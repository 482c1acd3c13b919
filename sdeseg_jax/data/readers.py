"""Readers of the real dataset layouts (Cityscapes, GTA5, Synthia, CamVid).

A reader turns a dataset folder into a list of :class:`Sample` records, one
per training example, in the reference's order: the *sorted list of full path
strings* of the annotated images. The position of a
record in that list is its ``index``, the number the labeled-subset files and
the reference's ``preselected_labels`` refer to.

Layouts (``root`` is the dataset folder; ``<img>`` is ``leftImg8bit`` or, with
the reference's preprocessed copies, ``leftImg8bit_small`` with ``.jpg``):

* ``cityscapes``: ``<img>/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png``,
  ``gtFine/{split}/<city>/..._gtFine_labelIds.png`` (label ids),
  ``<img>_sequence/{split}/<city>/...`` (neighbour frames, frame number ±k),
  ``camera/{split}/<city>/..._camera.json`` (intrinsics in pixels of the
  full-resolution ``leftImg8bit`` image, ``extrinsic.baseline``) and optionally
  ``disparity/{split}/<city>/..._disparity.png`` (ground-truth depth
  ``baseline * fx / ((p - 1) / 256)``, ``p = 0`` invalid).
* ``gta5``: ``images/*.png`` (or ``images_small/*.jpg``) and ``labels/*.png``
  (palette PNGs whose raw indices are Cityscapes label ids; read without
  ``convert``). The last ``val_count`` sorted files are ``val`` (500 in the
  reference). With ``all_frames`` the reader returns, instead, the frames of
  the GTASeq / VIPER folder ``sequence_path`` (default ``<path>/sequences``;
  ``{split}/img/<seq>/<seq>_<id:05d>.<ext>``) whose neighbours ``id + o``
  exist, without labels (SDE training).
* ``synthia``: ``RGB/*.png`` (or ``RGB_small/*.jpg``) and
  ``synthia_mapped_to_cityscapes/*.png`` (Synthia class ids, no convert), same
  train/val split rule as GTA5. With ``all_frames`` (SynthiaSeq): train =
  every ``video/<seq>/<id:06d>.<ext>`` frame (or ``video_small``) under
  ``sequence_path`` (default ``<path>``), val = ``RGB`` with 7-digit ids as
  neighbours, as the reference does.
* ``camvid``: SegNet layout ``{train,val,test}/*.png`` and
  ``{train,val,test}annot/*.png`` (ids 0..10, 11 = unlabeled -> 250).

A ``minicity.json`` sidecar at the dataset root (written by
``sdeseg_jax.data.minicity``) supplies intrinsics, ground-truth depth files
and the camera height and pitch for every frame; see ``MiniCitySidecar``.
With ``with_pose`` the reader also attaches the camera-to-world pose of every
frame of a sample (``Sample.poses``); that needs the sidecar, since none of
the real layouts ships per-frame poses.

Every inconsistency found here raises :class:`DatasetError` naming the file
and what was expected, so that a bad dataset fails at preparation time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Sequence

import numpy as np
from PIL import Image

from sdeseg_jax.constants import IGNORE_INDEX
from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.data import layouts as layouts_lib

LAYOUTS = layouts_lib.NAMES


class DatasetError(ValueError):
  """A dataset on disk does not match what the reader expects."""


@dataclasses.dataclass(frozen=True)
class Sample:
  """One example of a dataset split, as found on disk.

  Attributes:
    index: position in the split's sorted list of (annotated) images.
    frames: absolute paths of the frames, ordered by the sorted frame offsets.
    relpath: the centre frame's path relative to the dataset root (key for
      pseudo-depth files).
    label: path of the label file, or None.
    intrinsics: ``(fx/W, fy/H, cx/W, cy/H)`` in the full-resolution image.
    full_size: ``(W, H)`` of the full-resolution image.
    depth: path of the ground-truth depth source, or None.
    depth_kind: ``"cityscapes_disparity"`` or ``"minicity"``.
    depth_scale: ``baseline * fx`` (metre-pixels) for Cityscapes disparity;
      metres per unit of the 16-bit PNG for MiniCity depth.
    camera_height: metres, NaN if unknown.
    camera_pitch: radians, NaN if unknown.
    poses: per frame (same order as ``frames``) the 16 floats of the 4x4
      camera-to-world pose (row-major, OpenCV camera axes) from the MiniCity
      sidecar; ``()`` unless the stream asks for poses (``with_pose``).
  """
  index: int
  frames: tuple[str, ...]
  relpath: str
  label: str | None
  intrinsics: tuple[float, float, float, float]
  full_size: tuple[int, int]
  depth: str | None = None
  depth_kind: str = ""
  depth_scale: float = 0.0
  camera_height: float = math.nan
  camera_pitch: float = math.nan
  poses: tuple[tuple[float, ...], ...] = ()


# ----------------------------------------------------------------------------
# Helpers.


def _require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise DatasetError(f"missing folder {path}: expected {what}.")
  return path


def _glob_sorted(base: str, suffix: str) -> list[str]:
  """All files under ``base`` ending in ``suffix``, sorted as full paths."""
  out = []
  for dirpath, _, files in os.walk(base):
    for f in files:
      if f.endswith(suffix):
        out.append(os.path.join(dirpath, f))
  return sorted(out)


def check_image(path: str, *, mode: str | None = None) -> tuple[int, int]:
  """Fully decodes an image to catch corruption; returns its ``(W, H)``.

  Args:
    path: image file.
    mode: if given, the PIL mode the file must have (e.g. "P" or "L").

  Raises:
    DatasetError: missing, truncated or undecodable file, or wrong mode.
  """
  if not os.path.isfile(path):
    raise DatasetError(f"missing file {path}")
  try:
    with Image.open(path) as img:
      img.load()
      if mode is not None and img.mode not in mode.split("|"):
        raise DatasetError(
            f"{path}: image mode {img.mode!r}, expected {mode!r}")
      return img.size
  except DatasetError:
    raise
  except Exception as e:  # PIL raises many types for broken files.
    raise DatasetError(
        f"{path}: corrupt or truncated image ({type(e).__name__}: {e}); "
        "re-create or delete it.") from e


def read_image_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _unsmall(rel: str) -> str:
  """Maps a path in a ``_small`` folder to its full-resolution twin."""
  parts = rel.split(os.sep)
  parts = [p[:-len("_small")] if p.endswith("_small") else p for p in parts]
  return os.sep.join(parts)


@functools.lru_cache(maxsize=256)
def _listdir(path: str) -> tuple[str, ...]:
  """Sorted entries of a folder (cached); () if it does not exist."""
  return tuple(sorted(os.listdir(path))) if os.path.isdir(path) else ()


def _choose_folder(root: str, name: str, image_folder: str) -> tuple[str, str]:
  """Picks ``name`` or ``name_small``; returns ``(folder, extension)``.

  Args:
    root: dataset root.
    name: full-resolution folder name, e.g. ``leftImg8bit``.
    image_folder: ``"full"``, ``"small"`` or ``"auto"`` (small if present).
  """
  small = os.path.join(root, name + "_small")
  full = os.path.join(root, name)
  if image_folder == "small" or (
      image_folder == "auto" and os.path.isdir(small)):
    return _require_dir(small, f"preprocessed {name}_small images (run "
                        "python -m sdeseg_jax.data.downsample)"), ".jpg"
  if image_folder not in ("full", "auto"):
    raise DatasetError(
        f"image_folder={image_folder!r}; expected 'auto', 'full' or 'small'")
  return _require_dir(full, f"the {name} images"), ".png"


def load_train_ids(path: str, layout: str) -> np.ndarray:
  """Reads a label file and maps it to train ids.

  Palette ("P") files are read without ``convert`` so that the raw indices are
  the ids (GTA5, Synthia; as the reference reads them).

  Args:
    path: label PNG.
    layout: one of LAYOUTS.

  Returns:
    [H, W] uint8 train ids, 250 = ignore.

  Raises:
    DatasetError: unreadable file, not a single-channel image, or an id that
      the layout's label table does not know.
  """
  check_image(path)
  with Image.open(path) as img:
    if img.mode not in ("L", "P", "I", "I;16"):
      raise DatasetError(
          f"{path}: label image has mode {img.mode!r}; expected a "
          "single-channel id image (L, P or 16-bit).")
    ids = np.asarray(img)
  values = np.unique(ids)
  lay = layouts_lib.LAYOUTS[layout]
  bad = [int(v) for v in values if int(v) not in lay.raw_ids]
  if bad:
    raise DatasetError(
        f"{path}: label ids {bad[:10]} are not in the {layout} label table "
        f"(known ids: {sorted(lay.raw_ids)}).")
  return lay.train_id_lut[ids.astype(np.int64)]


def disparity_to_depth(disparity: np.ndarray, baseline_fx: float
                      ) -> np.ndarray:
  """Cityscapes disparity PNG values -> depth in metres (0 = invalid).

  Args:
    disparity: [H, W] uint16 raw PNG values ``p``; the disparity in pixels is
      ``(p - 1) / 256`` and ``p = 0`` marks invalid pixels.
    baseline_fx: ``baseline * fx`` of the camera (metres * pixels at the
      resolution of the disparity map).

  Returns:
    [H, W] float32 depth; pixels with ``p <= 1`` (no or zero disparity) are 0.
  """
  p = disparity.astype(np.float64)
  valid = p > 1
  depth = np.zeros(p.shape, np.float32)
  depth[valid] = baseline_fx / ((p[valid] - 1.0) / 256.0)
  return depth


# ----------------------------------------------------------------------------
# Cityscapes.

_CS_NAME = re.compile(r"^(.+)_(\d{6})_(\d{6})_leftImg8bit\.(png|jpg)$")


def _cs_neighbour(path: str, img_dir: str, seq_dir: str, offset: int) -> str:
  folder, name = os.path.split(path)
  m = _CS_NAME.match(name)
  if not m:
    raise DatasetError(
        f"{path}: file name does not match "
        "<city>_<seq:06d>_<frame:06d>_leftImg8bit.<png|jpg>")
  city, seq, frame, ext = m.groups()
  if offset == 0:
    return path
  rel = os.path.relpath(folder, img_dir)
  return os.path.join(
      seq_dir, rel,
      f"{city}_{seq}_{int(frame) + offset:06d}_leftImg8bit.{ext}")


def _read_camera_json(path: str) -> dict[str, float]:
  if not os.path.isfile(path):
    raise DatasetError(f"missing camera file {path}")
  try:
    with open(path) as f:
      cam = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DatasetError(f"{path}: not valid JSON ({e})") from e
  intr = cam.get("intrinsic") if isinstance(cam, dict) else None
  if not isinstance(intr, dict) or not all(
      isinstance(intr.get(k), (int, float)) for k in ("fx", "fy", "u0", "v0")):
    raise DatasetError(
        f"{path}: expected an 'intrinsic' object with numeric fx, fy, u0, v0 "
        "(pixels of the full-resolution image).")
  out = {k: float(intr[k]) for k in ("fx", "fy", "u0", "v0")}
  ext = cam.get("extrinsic", {})
  out["baseline"] = float(ext.get("baseline", math.nan))
  return out


def _cityscapes(root: str, split: str, *, image_folder: str,
                frame_offsets: Sequence[int], all_frames: bool,
                full_res: tuple[int, int],
                sidecar: MiniCitySidecar) -> list[Sample]:
  img_dir, ext = _choose_folder(root, "leftImg8bit", image_folder)
  img_dir = _require_dir(os.path.join(img_dir, split),
                         f"Cityscapes {split} images")
  seq_base = os.path.basename(os.path.dirname(img_dir)).replace(
      "leftImg8bit", "leftImg8bit_sequence")
  seq_dir = os.path.join(root, seq_base, split)
  needs_seq = all_frames or any(o != 0 for o in frame_offsets)
  if needs_seq:
    _require_dir(seq_dir, "sequence frames (leftImg8bit_sequence layout)")
  base_dir = seq_dir if all_frames else img_dir
  files = _glob_sorted(base_dir, "_leftImg8bit" + ext)
  if not files:
    raise DatasetError(
        f"{base_dir}: no *_leftImg8bit{ext} files; expected "
        f"{base_dir}/<city>/<city>_<seq>_<frame>_leftImg8bit{ext}")
  offsets = sorted(frame_offsets)
  cam_dir = os.path.join(root, "camera", split)
  disp_dir = os.path.join(root, "disparity", split)
  samples = []
  for path in files:
    frames = tuple(_cs_neighbour(path, base_dir, seq_dir, o) for o in offsets)
    if all_frames and not all(os.path.isfile(f) for f in frames):
      continue  # The reference drops frames without neighbours.
    for f in frames:
      if not os.path.isfile(f):
        raise DatasetError(
            f"missing neighbour frame {f} (needed for {path} with "
            f"frame_offsets={tuple(frame_offsets)})")
    rel = os.path.relpath(path, base_dir)
    stem = os.path.basename(path)[:-len("_leftImg8bit" + ext)]
    city_rel = os.path.dirname(rel)
    label = None
    if not all_frames:
      label = os.path.join(root, "gtFine", split, city_rel,
                           stem + "_gtFine_labelIds.png")
      if not os.path.isfile(label):
        raise DatasetError(f"missing label file {label} for image {path}")
    # Full-resolution size: from the original image when it is there.
    full_size = full_res
    # The full-resolution twin of this (possibly _small) file.
    full_img = os.path.join(
        root, os.path.splitext(_unsmall(os.path.relpath(path, root)))[0]
        + ".png")
    if os.path.isfile(full_img):
      with Image.open(full_img) as im:
        full_size = im.size
    meta = sidecar.lookup(path) if sidecar else None
    depth, depth_kind, depth_scale = None, "", 0.0
    height = pitch = math.nan
    if meta is not None:
      intr, full_size = meta["intrinsics"], meta["full_size"]
      depth, depth_kind, depth_scale = (
          meta["depth"], "minicity", meta["depth_scale"])
      height, pitch = meta["camera_height"], meta["camera_pitch"]
    elif os.path.isdir(os.path.join(root, "camera")):
      cam_file = os.path.join(cam_dir, city_rel, stem + "_camera.json")
      if all_frames and not os.path.isfile(cam_file):
        # Sequence frames share the camera of their snippet's annotated
        # frame (only annotated frames have camera files).
        snippet = stem.rsplit("_", 1)[0] + "_"
        cands = [f for f in _listdir(os.path.dirname(cam_file))
                 if f.startswith(snippet)]
        if cands:
          cam_file = os.path.join(os.path.dirname(cam_file), cands[0])
      cam = _read_camera_json(cam_file)
      w, h = full_size
      intr = (cam["fx"] / w, cam["fy"] / h, cam["u0"] / w, cam["v0"] / h)
      disp = os.path.join(disp_dir, city_rel, stem + "_disparity.png")
      if os.path.isfile(disp):
        if not math.isfinite(cam["baseline"]):
          raise DatasetError(
              f"{cam_file}: 'extrinsic.baseline' is needed to turn "
              f"{disp} into depth")
        depth, depth_kind = disp, "cityscapes_disparity"
        depth_scale = cam["baseline"] * cam["fx"]
    else:
      intr = layouts_lib.LAYOUTS["cityscapes"].intrinsics
    samples.append(Sample(
        index=len(samples), frames=frames,
        relpath=os.path.relpath(path, root), label=label,
        intrinsics=tuple(float(x) for x in intr),
        full_size=tuple(int(x) for x in full_size), depth=depth,
        depth_kind=depth_kind, depth_scale=float(depth_scale),
        camera_height=float(height), camera_pitch=float(pitch)))
  return samples


# ----------------------------------------------------------------------------
# GTA5, Synthia, CamVid.


def _split_last(files: list[str], split: str, val_count: int,
                what: str) -> tuple[list[str], int]:
  """The reference's rule: the last ``val_count`` sorted files are val.

  Returns the split's files and the offset of its first file in ``files``.
  """
  if val_count < 0 or val_count >= len(files):
    raise DatasetError(
        f"{what}: val_count={val_count} but only {len(files)} files; "
        "val_count must be in [0, number of files).")
  cut = len(files) - val_count
  if split == "train":
    return files[:cut], 0
  if split == "val":
    return files[cut:], cut
  raise DatasetError(f"{what}: split {split!r}; expected 'train' or 'val'")


def _seg_pairs(root: str, img_name: str, lbl_name: str, layout: str,
               split: str, *, image_folder: str, val_count: int,
               intrinsics, full_res, check: bool, sidecar) -> list[Sample]:
  """GTA5 ``images/labels`` or Synthia ``RGB/synthia_mapped_to_cityscapes``."""
  img_dir, ext = _choose_folder(root, img_name, image_folder)
  lbl_dir = _require_dir(os.path.join(root, lbl_name),
                         f"{layout} label PNGs ({lbl_name}/*.png)")
  files = _glob_sorted(img_dir, ext)
  if not files:
    raise DatasetError(f"{img_dir}: no *{ext} images")
  files, _ = _split_last(files, split, val_count, img_dir)
  samples = []
  for path in files:
    rel = os.path.relpath(path, img_dir)
    label = os.path.join(lbl_dir, os.path.splitext(rel)[0] + ".png")
    if not os.path.isfile(label):
      raise DatasetError(f"missing label file {label} for image {path}")
    samples.append(_make_sample(
        len(samples), (path,), root, label, intrinsics, full_res, check,
        sidecar))
  return samples


def _make_sample(index, frames, root, label, intrinsics, full_res, check,
                 sidecar, centre: int = 0) -> Sample:
  """A Sample of ``frames`` whose annotated/centre frame is ``frames[centre]``.
  """
  meta = sidecar.lookup(frames[centre]) if sidecar else None
  kw = {}
  if meta is not None:
    intrinsics, full_res = meta["intrinsics"], meta["full_size"]
    kw = dict(depth=meta["depth"], depth_kind="minicity",
              depth_scale=float(meta["depth_scale"]),
              camera_height=float(meta["camera_height"]),
              camera_pitch=float(meta["camera_pitch"]))
  del check  # Frames are checked once each by list_samples.
  return Sample(index=index, frames=tuple(frames),
                relpath=os.path.relpath(frames[centre], root), label=label,
                intrinsics=tuple(float(x) for x in intrinsics),
                full_size=tuple(int(x) for x in full_res), **kw)


_SEQ_ID = re.compile(r"^(.*?)(\d+)(\.[a-z]+)$")


def _sequence_frames(base: str, ext: str, offsets: Sequence[int],
                     digits: int | None) -> list[tuple[str, ...]]:
  """Frames whose numeric id has every neighbour id + offset on disk.

  The reference's GTASeq / SynthiaSeq rule: files are sorted and a file
  is kept if the files with ids ``id + o`` exist for every offset ``o``.
  """
  files = _glob_sorted(base, ext)
  if not files:
    raise DatasetError(f"{base}: no *{ext} sequence frames")
  present = set(files)
  out = []
  for path in files:
    folder, name = os.path.split(path)
    m = _SEQ_ID.match(name)
    if not m:
      raise DatasetError(
          f"{path}: sequence frame names must end in a numeric id, e.g. "
          f"<seq>_<id>{ext}")
    prefix, num, suffix = m.groups()
    width = digits or len(num)
    frames = tuple(
        os.path.join(folder, f"{prefix}{int(num) + o:0{width}d}{suffix}")
        for o in offsets)
    if all(f in present for f in frames):
      out.append(frames)
  if not out:
    raise DatasetError(
        f"{base}: no frame has all neighbours at offsets {tuple(offsets)}")
  return out


def _gta5_or_synthia_seq(root: str, layout: str, split: str, *,
                         image_folder: str, frame_offsets, intrinsics,
                         full_res, check: bool, sidecar,
                         dataset_root: str) -> list[Sample]:
  offsets = sorted(frame_offsets)
  exts = (".jpg", ".png")
  if layout == "gta5":
    base = _require_dir(
        os.path.join(root, split, "img"),
        f"GTASeq frames ({split}/img/<seq:03d>/<seq:03d>_<id:05d>.png)")
    digits = 5
  elif split == "train":
    # SynthiaSeq: train frames are the video sequences (6-digit ids), val
    # frames the RAND-CITYSCAPES images (7-digit ids), as in the reference.
    base, _ = _choose_folder(root, "video", image_folder)
    digits = 6
  elif split == "val":
    base, _ = _choose_folder(root, "RGB", image_folder)
    digits = 7
  else:
    raise DatasetError(
        f"Synthia sequences: split {split!r}; expected 'train' or 'val'")
  ext = next((e for e in exts if _glob_sorted(base, e)), exts[0])
  samples = []
  for frames in _sequence_frames(base, ext, offsets, digits):
    samples.append(_make_sample(len(samples), frames, dataset_root, None,
                                intrinsics, full_res, check, sidecar,
                                centre=offsets.index(0)))
  return samples


def _camvid(root: str, split: str, *, intrinsics, full_res, check: bool,
            sidecar) -> list[Sample]:
  img_dir = _require_dir(os.path.join(root, split),
                         f"CamVid {split} images (SegNet layout)")
  lbl_dir = _require_dir(os.path.join(root, split + "annot"),
                         f"CamVid {split}annot label PNGs")
  files = _glob_sorted(img_dir, ".png")
  if not files:
    raise DatasetError(f"{img_dir}: no *.png images")
  samples = []
  for path in files:
    label = os.path.join(lbl_dir, os.path.relpath(path, img_dir))
    if not os.path.isfile(label):
      raise DatasetError(f"missing label file {label} for image {path}")
    samples.append(_make_sample(len(samples), (path,), root, label,
                                intrinsics, full_res, check, sidecar))
  return samples


# ----------------------------------------------------------------------------
# The reader of each layout of ``layouts.LAYOUTS``: ``(stream config, root,
# split, *, intrinsics, full_res, offsets, check, sidecar) -> samples``.


def _read_cityscapes(cfg, root, split, *, intrinsics, full_res, offsets,
                     check, sidecar):
  del intrinsics, check  # Camera files; frames are checked by list_samples.
  return _cityscapes(
      root, split, image_folder=cfg.image_folder, frame_offsets=offsets,
      all_frames=cfg.all_frames, full_res=full_res, sidecar=sidecar)


def _read_camvid(cfg, root, split, *, intrinsics, full_res, offsets, check,
                 sidecar):
  if offsets != (0,) or cfg.all_frames:
    raise DatasetError("camvid has no sequences; use frame_offsets=(0,)")
  return _camvid(root, split, intrinsics=intrinsics, full_res=full_res,
                 check=check, sidecar=sidecar)


def _read_gta5_or_synthia(cfg, root, split, *, intrinsics, full_res, offsets,
                          check, sidecar):
  layout = cfg.layout
  if cfg.all_frames:
    seq_root = cfg.sequence_path or os.path.join(root, "sequences")
    if layout == "synthia":
      seq_root = cfg.sequence_path or root
    seq_root = _require_dir(seq_root, f"the {layout} sequence folder "
                            "(set sequence_path)")
    return _gta5_or_synthia_seq(
        seq_root, layout, split, image_folder=cfg.image_folder,
        frame_offsets=offsets, intrinsics=intrinsics, full_res=full_res,
        check=check, sidecar=sidecar, dataset_root=root)
  if offsets != (0,):
    raise DatasetError(
        f"stream {cfg.name!r}: {layout} segmentation images have no "
        f"neighbour frames (frame_offsets={offsets}); set all_frames=True "
        "to read the sequence folder instead.")
  lay = layouts_lib.LAYOUTS[layout]
  return _seg_pairs(
      root, lay.image_folders[0], lay.label_folders[0], layout, split,
      image_folder=cfg.image_folder, val_count=cfg.val_count,
      intrinsics=intrinsics, full_res=full_res, check=check, sidecar=sidecar)


READERS = {"cityscapes": _read_cityscapes, "gta5": _read_gta5_or_synthia,
           "synthia": _read_gta5_or_synthia, "camvid": _read_camvid}


# ----------------------------------------------------------------------------
# Entry point.


def list_samples(cfg, split: str, *, check: bool = False) -> list[Sample]:
  """Lists the samples of one split of a dataset on disk.

  Args:
    cfg: a stream config (``configs/common.py:stream_config``); reads
      ``layout``, ``path``, ``sequence_path``, ``image_folder``,
      ``frame_offsets``, ``all_frames``, ``val_count``, ``intrinsics``,
      ``full_res`` and ``with_pose``.
    split: ``"train"``, ``"val"`` (or ``"test"`` for CamVid).
    check: fully decode every frame (slow; done at preparation time).

  Returns:
    The samples in index order (sorted full paths of the annotated images, or
    of the sequence frames for ``all_frames``).

  Raises:
    DatasetError: the folder does not match the layout, or ``with_pose`` is
      set and the folder has no MiniCity sidecar (``<path>/minicity.json``).
  """
  layout = cfg.layout
  if layout not in LAYOUTS:
    raise DatasetError(f"layout {layout!r}; expected one of {LAYOUTS}")
  root = cfg.path
  if not root:
    raise DatasetError(f"stream {cfg.name!r}: 'path' (dataset folder) is empty")
  _require_dir(root, f"the {layout} dataset folder")
  lay = layouts_lib.LAYOUTS[layout]
  default_intr, default_full = lay.intrinsics, lay.full_res
  intr = tuple(cfg.intrinsics) if cfg.intrinsics else default_intr
  full_res = tuple(cfg.full_res) if cfg.full_res else default_full
  if len(intr) != 4 or len(full_res) != 2:
    raise DatasetError(
        f"stream {cfg.name!r}: intrinsics must be (fx/W, fy/H, cx/W, cy/H) "
        f"and full_res (W, H); got {intr} and {full_res}")
  offsets = tuple(cfg.frame_offsets)
  if 0 not in offsets:
    raise DatasetError(
        f"stream {cfg.name!r}: frame_offsets={offsets} must contain 0")
  sidecar = MiniCitySidecar(root)
  samples = READERS[layout](cfg, root, split, intrinsics=intr,
                            full_res=full_res, offsets=offsets, check=check,
                            sidecar=sidecar)
  if not samples:
    raise DatasetError(f"{root}: no samples for split {split!r}")
  if cfg.with_pose:
    samples = _attach_poses(samples, sidecar, cfg.name)
  if check:
    # Each frame once, although sequence frames are shared by neighbours.
    for f in sorted({f for smp in samples for f in smp.frames}):
      check_image(f)
  return samples


def _attach_poses(samples: list[Sample], sidecar: MiniCitySidecar,
                  stream_name: str) -> list[Sample]:
  """Adds every frame's camera-to-world pose from the sidecar.

  Raises:
    DatasetError: no sidecar (the real layouts have no per-frame poses), a
      frame outside the sidecar's root, or a pose that is not 16 finite
      numbers.
  """
  if not sidecar:
    raise DatasetError(
        f"stream {stream_name!r}: with_pose=True needs ground-truth camera "
        f"poses from a MiniCity sidecar, but {sidecar.path} does not exist "
        "(real Cityscapes/GTA5/Synthia/CamVid folders have no per-frame "
        "poses); set with_pose=False for this dataset.")
  out = []
  for smp in samples:
    poses = []
    for f in smp.frames:
      meta = sidecar.lookup(f)
      if meta is None:
        raise DatasetError(
            f"{sidecar.path}: frame {f} is outside the sidecar's dataset "
            "root, so it has no pose (with_pose=True); keep the sequence "
            "folder under the dataset root.")
      pose = np.asarray(meta["pose"], np.float64).reshape(-1)
      if pose.shape != (16,) or not np.all(np.isfinite(pose)):
        raise DatasetError(
            f"{sidecar.path}: 'pose' of frame {f} must be 16 finite numbers "
            "(4x4 camera-to-world, row-major).")
      poses.append(tuple(float(x) for x in pose))
    out.append(dataclasses.replace(smp, poses=tuple(poses)))
  return out


# ----------------------------------------------------------------------------
# MiniCity sidecar.


class MiniCitySidecar:
  """Per-frame camera metadata from a ``minicity.json`` sidecar, if present.

  ``lookup(image_path)`` returns ``None`` for datasets without a sidecar, or a
  dict with ``intrinsics`` (normalised), ``depth`` (absolute path of the
  ground-truth depth PNG), ``depth_scale`` (metres per PNG unit),
  ``camera_height``, ``camera_pitch`` and ``pose`` (16 floats, 4x4
  camera-to-world, row-major, OpenCV camera axes; docs/minicity.md).
  """

  def __init__(self, root: str):
    self.root = root
    self.path = os.path.join(root, "minicity.json")
    self._frames: dict[str, dict[str, Any]] = {}
    self.meta: dict[str, Any] = {}
    if os.path.isfile(self.path):
      self._load()

  def __bool__(self):
    return bool(self.meta)

  def _load(self):
    try:
      with open(self.path) as f:
        meta = json.load(f)
      w, h = int(meta["width"]), int(meta["height"])
      k = meta["intrinsics"]
      intr = (k["fx"] / w, k["fy"] / h, k["cx"] / w, k["cy"] / h)
      unit = 1.0 / float(meta["depth_encoding"]["scale"])
      for fr in meta["frames"]:
        entry = {
            "intrinsics": intr, "full_size": (w, h),
            "depth": os.path.join(self.root, fr["depth"]),
            "depth_scale": unit,
            "camera_height": float(fr["camera_height"]),
            "camera_pitch": float(fr["camera_pitch"]),
            "pose": fr["pose"],
        }
        for key in ("image", "annotated_image"):
          if fr.get(key):
            self._frames[os.path.splitext(fr[key])[0]] = entry
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
      raise DatasetError(
          f"{self.path}: not a MiniCity sidecar ({type(e).__name__}: {e}); "
          "expected the schema of sdeseg_jax/data/minicity/dataset.py") from e
    self.meta = meta

  def lookup(self, image_path: str) -> dict[str, Any] | None:
    """Metadata of a frame; None without a sidecar or outside its root."""
    if not self.meta:
      return None
    rel = os.path.relpath(image_path, self.root)
    if rel.startswith(".."):
      return None
    rel = _unsmall(rel)
    key = os.path.splitext(rel)[0]
    if key not in self._frames:
      raise DatasetError(
          f"{self.path}: no entry for frame {rel} (regenerate the dataset or "
          "remove the sidecar)")
    return self._frames[key]
