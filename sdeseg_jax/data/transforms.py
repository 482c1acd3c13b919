"""Per-sample transforms of the input pipeline (as the reference's loaders).

All transforms are picklable module-level grain transforms, so they run in
grain worker processes. Randomness comes only from the ``np.random.Generator``
that grain's ``random_map`` derives from (pipeline seed, element index); a
sample's augmentation is therefore the same whatever the number of workers.

Order of operations, as in ``SequenceSegmentationLoader.__getitem__``:
colour-aug gate (p 0.5), flip (p ``flip_prob``), then decode and resize every
frame to the stream's image size (Lanczos; a no-op for pre-downsampled
files), label (NEAREST), random crop (same window for every frame, label and
depth), intrinsics of the crop, the cascaded Lanczos pyramid of the centre
frame, the SDE colour augmentation of ``color_aug`` and, for pose streams,
the ground-truth ``gt_cam_T_cam`` (mirrored with the flip).
"""

from __future__ import annotations

import io
import os
from typing import Any

import grain
import numpy as np
from PIL import Image
from PIL import ImageEnhance

from sdeseg_jax.data.readers import DatasetError

from sdeseg_jax.constants import IGNORE_INDEX
INTRINSICS_MODES = ("ssda", "exact", "master_compat")


# ----------------------------------------------------------------------------
# Pure helpers (numpy / PIL), tested on their own.


def intrinsics_matrix(intrinsics, full_size, image_size, x1: int, y1: int,
                      flip: bool, mode: str = "ssda") -> np.ndarray:
  """Camera matrix of a crop, in pixels of the delivered image.

  Args:
    intrinsics: ``(fx/W, fy/H, cx/W, cy/H)`` normalised by the
      full-resolution image size.
    full_size: ``(W, H)`` of the full-resolution image.
    image_size: ``(w, h)`` of the image before cropping.
    x1: left column of the crop (in flipped coordinates when ``flip``).
    y1: top row of the crop.
    flip: whether the image was flipped horizontally.
    mode: ``"ssda"``: correct geometry (IJCV branch): ``cx -> 1 - cx`` on flip,
      scaled to ``(w, h)`` (pixel centres at half-integers, as the
      reference). ``"exact"``: pixel centres at integers (OpenCV/monodepth
      convention, e.g. MiniCity's renderer): resizing maps ``c`` to
      ``(c + 0.5) * s - 0.5`` and a flip maps ``cx`` to ``w - 1 - cx``; it
      differs from ``"ssda"`` by at most one pixel. ``"master_compat"``: the
      CVPR branch's [BUG] behaviour kept for loading its checkpoints:
      full-resolution pixel values used unscaled, and the flip also mirrors
      ``cy``.

  Returns:
    [4, 4] float32 ``K``.
  """
  fx, fy, cx, cy = (float(v) for v in intrinsics)
  if mode == "ssda":
    w, h = image_size
    if flip:
      cx = 1.0 - cx
    fx, fy, cx, cy = fx * w, fy * h, cx * w, cy * h
  elif mode == "exact":
    big_w, big_h = full_size
    w, h = image_size
    sx, sy = w / big_w, h / big_h
    fx, fy = fx * big_w * sx, fy * big_h * sy
    cx = (cx * big_w + 0.5) * sx - 0.5
    cy = (cy * big_h + 0.5) * sy - 0.5
    if flip:
      cx = w - 1 - cx
  elif mode == "master_compat":
    big_w, big_h = full_size
    fx, fy, cx, cy = fx * big_w, fy * big_h, cx * big_w, cy * big_h
    if flip:
      cx, cy = big_w - cx, big_h - cy
  else:
    raise ValueError(
        f"intrinsics_mode={mode!r}; expected one of {INTRINSICS_MODES}")
  k = np.eye(4, dtype=np.float64)
  k[0, 0], k[0, 2] = fx, cx - x1
  k[1, 1], k[1, 2] = fy, cy - y1
  return k.astype(np.float32)


def gt_cam_T_cam(poses, centre_index: int, flip: bool) -> np.ndarray:
  """Ground-truth centre->frame transforms from camera-to-world poses.

  ``T_f = inv(pose_f) @ pose_c`` maps a point in the centre camera's
  coordinates to frame ``f``'s camera coordinates: the convention of the
  pose net's ``cam_T_cam`` that ``geometry.warp.inverse_warp`` applies
  (target = centre, source = frame ``f``); ``T_c`` is the identity. A
  horizontal flip mirrors the camera's x axis (OpenCV axes), so every
  transform is conjugated by ``S = diag(-1, 1, 1, 1)``: ``S @ T_f @ S``.
  Resizing and cropping change only the intrinsics.

  Args:
    poses: ``[T, 16]`` (or ``[T, 4, 4]``) camera-to-world poses, row-major,
      of the sample's frames in the sorted frame-offset order.
    centre_index: position of offset 0 in that order.
    flip: whether the sample was flipped horizontally.

  Returns:
    ``[T, 4, 4]`` float32.
  """
  poses = np.asarray(poses, np.float64).reshape(-1, 4, 4)
  out = np.linalg.inv(poses) @ poses[centre_index]
  if flip:
    s = np.diag([-1.0, 1.0, 1.0, 1.0])
    out = s @ out @ s
  # The centre's inv(P) @ P is the identity up to rounding; make it exact.
  out[centre_index] = np.eye(4)
  return out.astype(np.float32)


def inverse_intrinsics(k: np.ndarray) -> np.ndarray:
  """``np.linalg.pinv(K)`` as the reference computes it; float32 [4, 4]."""
  return np.linalg.pinv(k.astype(np.float64)).astype(np.float32)


def color_jitter_params(rng: np.random.Generator, brightness=0.2,
                        contrast=0.2, saturation=0.2, hue=0.1):
  """Draws torchvision-0.7 ``ColorJitter.get_params`` factors and op order.

  Returns:
    A list of ``(op_name, factor)`` in the (shuffled) order of application.
  """
  ops = [("brightness", rng.uniform(1 - brightness, 1 + brightness)),
         ("contrast", rng.uniform(1 - contrast, 1 + contrast)),
         ("saturation", rng.uniform(1 - saturation, 1 + saturation)),
         ("hue", rng.uniform(-hue, hue))]
  order = rng.permutation(len(ops))
  return [ops[i] for i in order]


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
  """torchvision 0.7 ``adjust_hue``: uint8 HSV hue shift with wrap-around."""
  h, s, v = img.convert("HSV").split()
  np_h = np.asarray(h, dtype=np.uint8)
  # np.uint8(factor * 255) wrapped negative values in numpy 1.x (C cast of
  # the truncated integer); do the same explicitly.
  shift = int(factor * 255) % 256
  np_h = (np_h.astype(np.int32) + shift).astype(np.uint8)
  return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def apply_color_jitter(img: Image.Image, params) -> Image.Image:
  """Applies ``color_jitter_params`` output to an RGB PIL image."""
  for name, f in params:
    if name == "brightness":
      img = ImageEnhance.Brightness(img).enhance(f)
    elif name == "contrast":
      img = ImageEnhance.Contrast(img).enhance(f)
    elif name == "saturation":
      img = ImageEnhance.Color(img).enhance(f)
    else:
      img = _adjust_hue(img, f)
  return img


def lanczos_pyramid(img: Image.Image, num_scales: int) -> dict[str, Any]:
  """Cascaded Lanczos pyramid: scale s is resized from scale s-1.

  Args:
    img: the crop (scale 0), PIL RGB of size (w, h).
    num_scales: number of scales including 0.

  Returns:
    ``{"s1": [h/2, w/2, 3], ...}`` uint8 arrays for s = 1..num_scales-1.
  """
  out = {}
  w, h = img.size
  prev = img
  for s in range(1, num_scales):
    size = (w // 2**s, h // 2**s)
    prev = prev.resize(size, Image.LANCZOS)
    out[f"s{s}"] = np.asarray(prev, np.uint8)
  return out


def _decode_rgb(data: bytes, size: tuple[int, int], what: str) -> Image.Image:
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
  except Exception as e:
    raise DatasetError(f"cannot decode {what}: {e}") from e
  if img.mode != "RGB":
    img = img.convert("RGB")
  if img.size != size:
    img = img.resize(size, Image.LANCZOS)
  return img


def _decode_png(data: bytes, what: str) -> np.ndarray:
  try:
    img = Image.open(io.BytesIO(data))
    img.load()
  except Exception as e:
    raise DatasetError(f"cannot decode {what}: {e}") from e
  return np.asarray(img)


def _nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL-NEAREST resize of a 2-D array to ``size=(w, h)``.

  PIL samples source pixel ``floor((x + 0.5) * scale)`` (as the
  reference's label resize does); done in numpy to keep every dtype.
  """
  h, w = a.shape[:2]
  tw, th = size
  if (w, h) == (tw, th):
    return a
  ys = np.minimum(((np.arange(th) + 0.5) * h / th).astype(np.int64), h - 1)
  xs = np.minimum(((np.arange(tw) + 0.5) * w / tw).astype(np.int64), w - 1)
  return a[ys][:, xs]


def load_pseudo_depth(directory: str, relpath: str, encoding: str
                      ) -> np.ndarray:
  """Reads an exported pseudo-disparity PNG.

  Format: ``<directory>/<relpath of the image with .png>``, where ``relpath``
  is the centre frame's path relative to the dataset root with ``_small``
  folder suffixes removed (``leftImg8bit/train/aachen/x_leftImg8bit.png``).
  ``encoding`` ``"u8"``: 8-bit L, value / 255 (v1 estimator, min-max
  normalised); ``"u16"``: 16-bit, value / 65535 (v2 estimator, raw sigmoid).

  Returns:
    [H, W] float32.
  """
  parts = [p[:-6] if p.endswith("_small") else p
           for p in relpath.split("/")]
  path = os.path.join(directory, os.path.splitext("/".join(parts))[0] + ".png")
  if not os.path.isfile(path):
    raise DatasetError(
        f"missing pseudo-depth file {path} (pseudo_depth_dir={directory})")
  with open(path, "rb") as f:
    a = _decode_png(f.read(), path)
  if encoding == "u8":
    if a.dtype != np.uint8:
      raise DatasetError(f"{path}: expected an 8-bit PNG for encoding 'u8'")
    return a.astype(np.float32) / 255.0
  if encoding == "u16":
    if a.dtype not in (np.uint16, np.int32):
      raise DatasetError(f"{path}: expected a 16-bit PNG for encoding 'u16'")
    return a.astype(np.float32) / 65535.0
  raise ValueError(f"pseudo_depth_encoding={encoding!r}; expected u8 or u16")


# ----------------------------------------------------------------------------
# Grain transforms.


class ProcessSample(grain.transforms.RandomMap):
  """Decodes one stored record and applies the per-sample pipeline.

  Input: a record of the tfds builder (``sdeseg_jax.data.builder``) plus
  ``is_labeled`` (added by the pipeline's subset source). Output: the batch
  dictionary of docs/design.md for one sample.
  """

  def __init__(self, *, image_size, crop_size, train: bool,
               flip_prob: float, color_aug: bool, intrinsics_mode: str,
               num_scales: int, with_depth: bool, pseudo_depth_dir: str,
               pseudo_depth_encoding: str, centre_index: int = 0,
               keep_classes: tuple[int, ...] = (), with_pose: bool = False):
    """Stores the settings.

    Args:
      image_size: ``(H, W)`` every frame is resized to before cropping.
      crop_size: ``(h, w)`` of the training crop, or None for no crop.
      train: random flip/crop/colour augmentation on; off for evaluation
        (full image, no flip).
      flip_prob: probability of a horizontal flip.
      color_aug: SDE colour augmentation of ``color_aug`` (gate p 0.5).
      intrinsics_mode: see ``intrinsics_matrix``.
      num_scales: pyramid scales including 0 (``s1..s{n-1}`` keys); 1 = none.
      with_depth: deliver the ``depth`` key.
      pseudo_depth_dir: deliver ``pseudo_depth`` read from this folder, or "".
      pseudo_depth_encoding: ``"u8"`` or ``"u16"``.
      centre_index: position of offset 0 among the stored frames (the
        pyramid is built from that frame).
      keep_classes: train ids to keep in ``label`` (others become 250), e.g.
        the 16 Synthia classes; () keeps all 19.
      with_pose: deliver ``gt_cam_T_cam`` ``[T, 4, 4]`` from the record's
        ``poses`` (see ``gt_cam_T_cam``).
    """
    if intrinsics_mode not in INTRINSICS_MODES:
      raise ValueError(f"intrinsics_mode={intrinsics_mode!r}; expected one "
                       f"of {INTRINSICS_MODES}")
    self.image_size = tuple(image_size)
    self.crop_size = tuple(crop_size) if crop_size else None
    if self.crop_size and (self.crop_size[0] > self.image_size[0] or
                           self.crop_size[1] > self.image_size[1]):
      raise ValueError(f"crop_size {self.crop_size} is larger than "
                       f"image_size {self.image_size}")
    self.train = train
    self.flip_prob = flip_prob
    self.color_aug = color_aug
    self.intrinsics_mode = intrinsics_mode
    self.num_scales = num_scales
    self.with_depth = with_depth
    self.pseudo_depth_dir = pseudo_depth_dir
    self.pseudo_depth_encoding = pseudo_depth_encoding
    self.centre_index = centre_index
    self.with_pose = with_pose
    self.label_lut = None
    if keep_classes:
      self.label_lut = np.full(256, IGNORE_INDEX, np.int32)
      for c in keep_classes:
        if not 0 <= c < 19:
          raise ValueError(f"keep_classes: {c} is not a train id (0..18)")
        self.label_lut[c] = c

  def random_map(self, element: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, Any]:
    h, w = self.image_size
    # Draw order of the reference: colour-aug gate (drawn even when colour
    # augmentation is off, so that flip and crop do not depend on it), flip,
    # crop, jitter factors.
    gate = self.train and rng.random() > 0.5
    do_aug = gate and self.color_aug
    do_flip = self.train and rng.random() < self.flip_prob
    index = int(element["index"])
    frames = []
    for i, data in enumerate(element["frames"]):
      img = _decode_rgb(bytes(data), (w, h), f"frame {i} of record {index}")
      if do_flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
      frames.append(img)
    if self.train and self.crop_size:
      ch, cw = self.crop_size
      x1 = int(rng.integers(0, w - cw + 1))
      y1 = int(rng.integers(0, h - ch + 1))
    else:
      ch, cw, x1, y1 = h, w, 0, 0
    box = (x1, y1, x1 + cw, y1 + ch)
    frames = [f.crop(box) if (cw, ch) != (w, h) else f for f in frames]

    def spatial(a):  # resize (nearest), flip, crop a 2-D map.
      a = _nearest(a, (w, h))
      if do_flip:
        a = a[:, ::-1]
      return np.ascontiguousarray(a[y1:y1 + ch, x1:x1 + cw])

    out = {}
    out["color"] = np.stack([np.asarray(f, np.uint8) for f in frames])
    if do_aug:
      params = color_jitter_params(rng)
      out["color_aug"] = np.stack(
          [np.asarray(apply_color_jitter(f, params), np.uint8)
           for f in frames])
    else:
      out["color_aug"] = out["color"]
    centre = self.centre_index
    if self.num_scales > 1:
      out["pyramid"] = lanczos_pyramid(frames[centre], self.num_scales)
    k = intrinsics_matrix(element["intrinsics"], element["full_size"],
                          (w, h), x1, y1, do_flip, self.intrinsics_mode)
    out["K"] = k
    out["inv_K"] = inverse_intrinsics(k)
    is_labeled = bool(element["is_labeled"])
    if is_labeled and len(element["label"]):
      lbl = _decode_png(bytes(element["label"]), f"label of record {index}")
      out["label"] = spatial(lbl).astype(np.int32)
      if self.label_lut is not None:
        out["label"] = self.label_lut[out["label"]]
    else:
      out["label"] = np.full((ch, cw), IGNORE_INDEX, np.int32)
      is_labeled = False
    out["is_labeled"] = np.bool_(is_labeled)
    if self.with_depth:
      if len(element["depth"]):
        d = _decode_png(bytes(element["depth"]), f"depth of record {index}")
        depth = d.astype(np.float32) * np.float32(element["depth_unit"])
        out["depth"] = spatial(depth)
      else:
        out["depth"] = np.zeros((ch, cw), np.float32)
    if self.pseudo_depth_dir:
      pd = load_pseudo_depth(self.pseudo_depth_dir, _str(element["relpath"]),
                             self.pseudo_depth_encoding)
      if pd.shape != (h, w):
        raise DatasetError(
            f"pseudo depth of {_str(element['relpath'])} has shape "
            f"{pd.shape}; expected the image size {(h, w)}")
      out["pseudo_depth"] = spatial(pd)
    out["index"] = np.int32(index)
    out["camera_height"] = np.float32(element["camera_height"])
    out["camera_pitch"] = np.float32(element["camera_pitch"])
    if self.with_pose:
      if "poses" not in element:
        raise DatasetError(
            f"record {index} has no 'poses'; the stream asks for "
            "with_pose=True but was prepared without it")
      out["gt_cam_T_cam"] = gt_cam_T_cam(element["poses"], centre, do_flip)
    return out


def _str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def blank_like(sample: dict[str, Any]) -> dict[str, Any]:
  """A padding sample: same shapes, label all ignore, depth invalid, index -1.

  Used to fill the last evaluation batch; it contributes nothing to a
  confusion matrix (all 250) or to depth metrics (depth 0).
  """
  out = dict(sample)
  out["label"] = np.full_like(sample["label"], IGNORE_INDEX)
  out["is_labeled"] = np.bool_(False)
  out["index"] = np.int32(-1)
  if "depth" in out:
    out["depth"] = np.zeros_like(sample["depth"])
  return out
