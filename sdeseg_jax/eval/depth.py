"""Depth and pose evaluation (monodepth2 protocol), host-side numpy.

Metrics per image, then averaged over images (monodepth2's
``compute_depth_errors`` + ``evaluate_depth``):

* the predicted disparity (sigmoid output) is resized bilinearly to the
  ground-truth size and turned into depth with ``disp_to_depth(min, max)``;
* valid pixels: ``min_depth < gt < max_depth`` (1e-3 and 80 m);
* median scaling (self-supervised monocular depth has no metric scale):
  ``pred *= median(gt) / median(pred)`` over the valid pixels, per image;
  reported as ``<metric>`` and, without scaling, as ``<metric>_noscale``;
* predictions are clipped to ``[min_depth, max_depth]``;
* ``abs_rel = mean(|gt - p| / gt)``, ``sq_rel = mean((gt - p)^2 / gt)``,
  ``rmse``, ``rmse_log``, ``a1/a2/a3 = mean(max(gt/p, p/gt) < 1.25^k)``.

Ground truth is the batch's ``depth`` (metres, 0 = invalid): MiniCity's
rendered depth, or Cityscapes depth from disparity (the data pipeline
converts ``(png - 1) / 256`` disparity with the camera's baseline and fx).

Error budget (``DepthBreakdown``, from the same median-scaled, clipped
valid pixels): abs_rel and delta<1.25 pooled over the pixels of each group
-- semantic class (train ids of the batch's ``label``; images without
labels add no class rows), ground-truth distance band (``DISTANCE_BANDS``
metres) and image row band (``NUM_ROW_BANDS`` equal bands, top to bottom)
-- and each group's share of the total abs_rel error (the sum of
``|p - gt| / gt`` over its pixels / that sum over all pixels of the
grouping) and of the pixels. Pooling over pixels (not averaging per image
first) is what makes the shares add up; so the ``all`` row's abs_rel can
differ from the per-image mean ``abs_rel``.

Pose (when the batch has ground-truth ``gt_cam_T_cam`` ``[B, T, 4, 4]``,
i.e. a MiniCity stream with ``with_pose``, and the prediction has
``cam_T_cam``), per 2-frame snippet (centre frame and one neighbour), then
averaged over snippets (every sample x every neighbour):

* ``pose_ate``: absolute trajectory error, the trajectory aligned in scale
  by least squares as monodepth2's ``compute_ate`` (``snippet_ate``);
* ``pose_trans_angle_deg``: angle between the predicted and the true
  direction of the camera motion (the neighbour's camera centre in the
  centre camera's coordinates); scale-free, so it shows a wrong epipole even
  when the depth scale is arbitrary. Snippets where either motion is zero
  have no direction and are left out of this mean;
* ``pose_rot_deg``: angle of the relative rotation ``R_pred^T R_gt``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from sdeseg_jax.data import labels as labels_lib

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
POSE_METRICS = ("pose_ate", "pose_trans_angle_deg", "pose_rot_deg")
MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
# Edges (metres) of the error budget's distance bands; the last band ends
# at the evaluation cap (``MAX_DEPTH``).
DISTANCE_BANDS = (0.0, 10.0, 20.0, 40.0, 80.0)
NUM_ROW_BANDS = 4
GROUPINGS = ("class", "distance", "row")


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
  """The seven monodepth2 errors between 1-D arrays of valid depths.

  Args:
    gt: [N] positive ground-truth depths.
    pred: [N] positive predicted depths.

  Returns:
    ``{name: value}`` for ``METRICS``.
  """
  gt = np.asarray(gt, np.float64)
  pred = np.asarray(pred, np.float64)
  thresh = np.maximum(gt / pred, pred / gt)
  return {
      "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
      "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
      "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
      "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
      "a1": float(np.mean(thresh < 1.25)),
      "a2": float(np.mean(thresh < 1.25 ** 2)),
      "a3": float(np.mean(thresh < 1.25 ** 3)),
  }


def disp_to_depth(disp: np.ndarray, min_depth: float, max_depth: float):
  """monodepth2: sigmoid disparity -> depth in ``[min_depth, max_depth]``."""
  min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
  return 1.0 / (min_disp + (max_disp - min_disp) * np.asarray(disp))


def resize_disp(disp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a ``[h, w]`` map to ``size=(H, W)`` (as cv2)."""
  disp = np.asarray(disp, np.float32)
  if disp.shape == tuple(size):
    return disp
  return np.asarray(Image.fromarray(disp, mode="F").resize(
      (size[1], size[0]), Image.BILINEAR))


def image_metrics(gt_depth: np.ndarray, pred_depth: np.ndarray, *,
                  median_scaling: bool, min_depth: float = MIN_DEPTH,
                  max_depth: float = MAX_DEPTH) -> dict[str, float] | None:
  """Errors of one image, over the pixels :func:`valid_pixels` selects
  (same arguments).

  Returns:
    The metric dict (plus ``"scale"``), or None if no pixel is valid.
  """
  px = valid_pixels(gt_depth, pred_depth, median_scaling=median_scaling,
                    min_depth=min_depth, max_depth=max_depth)
  if px is None:
    return None
  _, gt, pred, scale = px
  out = depth_errors(gt, pred)
  out["scale"] = scale
  return out


def valid_pixels(gt_depth: np.ndarray, pred_depth: np.ndarray, *,
                 median_scaling: bool, min_depth: float = MIN_DEPTH,
                 max_depth: float = MAX_DEPTH):
  """The evaluated pixels of one image, scaled and clipped as
  ``image_metrics`` scores them.

  Args:
    gt_depth: [H, W] metres, 0 (or out of range) = invalid.
    pred_depth: [H, W] predicted depth at the same size.
    median_scaling: rescale the prediction by median(gt)/median(pred).
    min_depth, max_depth: valid range and clipping bounds.

  Returns:
    ``(mask [H, W] bool, gt [N], pred [N], scale)`` or None if no pixel is
    valid.
  """
  gt_depth = np.asarray(gt_depth, np.float64)
  pred_depth = np.asarray(pred_depth, np.float64)
  if gt_depth.shape != pred_depth.shape:
    raise ValueError(f"gt {gt_depth.shape} and prediction "
                     f"{pred_depth.shape} differ in shape")
  mask = (gt_depth > min_depth) & (gt_depth < max_depth)
  if not mask.any():
    return None
  gt, pred = gt_depth[mask], pred_depth[mask]
  scale = float(np.median(gt) / np.median(pred)) if median_scaling else 1.0
  pred = np.clip(pred * scale, min_depth, max_depth)
  return mask, gt, pred, scale


class DepthBreakdown:
  """The error budget (module docstring), accumulated image by image.

  Keeps per-group sums only (abs_rel sum, delta<1.25 count, pixel count),
  so memory does not grow with the stream.

  Args:
    class_names: names of the train ids 0..C-1; every other label value
      (the ignore index) is the ``void`` group.
    distance_bands: increasing band edges in metres; ground truth beyond
      the last edge falls in the last band.
    num_row_bands: equal bands of image rows, top to bottom.
  """

  def __init__(self, *, class_names=labels_lib.CLASS_NAMES,
               distance_bands=DISTANCE_BANDS,
               num_row_bands: int = NUM_ROW_BANDS):
    self.class_names = tuple(class_names) + ("void",)
    self.distance_bands = tuple(float(x) for x in distance_bands)
    if len(self.distance_bands) < 2 or np.any(
        np.diff(self.distance_bands) <= 0):
      raise ValueError(f"distance bands {self.distance_bands}: need at "
                       "least 2 increasing edges (metres)")
    if num_row_bands < 1:
      raise ValueError(f"num_row_bands={num_row_bands}; need >= 1")
    self.num_row_bands = num_row_bands
    edges = self.distance_bands
    self.names = {
        "class": self.class_names,
        "distance": tuple(f"{edges[i]:g}-{edges[i + 1]:g} m"
                          for i in range(len(edges) - 1)),
        "row": tuple(f"rows {i + 1}/{num_row_bands}"
                     for i in range(num_row_bands)),
    }
    # [group, (abs_rel sum, delta<1.25 count, pixels)]
    self._sums = {k: np.zeros((len(v), 3)) for k, v in self.names.items()}

  def add(self, mask: np.ndarray, gt: np.ndarray, pred: np.ndarray,
          label: np.ndarray | None = None) -> None:
    """Adds one image's evaluated pixels (``valid_pixels``' output).

    Args:
      mask: [H, W] bool, the valid pixels.
      gt, pred: [N] their ground truth and scaled, clipped prediction
        (N = mask.sum(), in row-major order).
      label: [H, W] train ids (ignore index = ``void``) or None (the image
        adds nothing to the class rows).
    """
    err = np.abs(gt - pred) / gt
    good = (np.maximum(gt / pred, pred / gt) < 1.25).astype(np.float64)
    rows = np.nonzero(mask)[0]
    groups = {
        "distance": np.clip(np.searchsorted(self.distance_bands[1:-1], gt,
                                            side="right"), 0,
                            len(self.names["distance"]) - 1),
        "row": rows * self.num_row_bands // mask.shape[0],
    }
    if label is not None:
      label = np.asarray(label)
      if label.shape != mask.shape:
        raise ValueError(f"label {label.shape} and depth {mask.shape} "
                         "differ in shape")
      ids = label[mask].astype(np.int64)
      void = len(self.class_names) - 1
      groups["class"] = np.where((ids >= 0) & (ids < void), ids, void)
    for k, g in groups.items():
      n = len(self.names[k])
      self._sums[k] += np.stack([np.bincount(g, err, n),
                                 np.bincount(g, good, n),
                                 np.bincount(g, minlength=n)], -1)

  def result(self) -> dict[str, list[dict[str, Any]]]:
    """``{grouping: [row, ...]}`` for each grouping with pixels.

    Each row: ``group`` (name), ``abs_rel`` and ``a1`` pooled over the
    group's pixels, ``error_share`` and ``pixel_share`` (fractions of the
    grouping's totals), ``pixels``; groups without pixels are left out,
    the last row is ``all``.
    """
    out = {}
    for k in GROUPINGS:
      sums = self._sums[k]
      total = sums.sum(0)
      if total[2] == 0:
        continue
      rows = []
      for name, (e, g, n) in zip(self.names[k] + ("all",),
                                 (*sums, total)):
        if n == 0:
          continue
        rows.append({"group": name, "abs_rel": e / n, "a1": g / n,
                     "error_share": e / total[0] if total[0] > 0 else 0.0,
                     "pixel_share": n / total[2], "pixels": int(n)})
      out[k] = rows
    return out


def format_breakdown(breakdown: dict[str, list[dict[str, Any]]],
                     title: str = "") -> str:
  """``DepthBreakdown.result()`` as one Markdown table per grouping."""
  lines = [f"### {title}", ""] if title else []
  for k, rows in breakdown.items():
    lines += [f"| {k} | abs_rel | d<1.25 | error share | pixel share |",
              "|---|---:|---:|---:|---:|"]
    for r in rows:
      lines.append(f"| {r['group']} | {r['abs_rel']:.4f} | {r['a1']:.4f} | "
                   f"{100 * r['error_share']:.1f} % | "
                   f"{100 * r['pixel_share']:.1f} % |")
    lines.append("")
  return "\n".join(lines)


class DepthAccumulator:
  """Averages per-image metrics, with and without median scaling, and
  accumulates the median-scaled error budget (``self.breakdown``)."""

  def __init__(self, *, min_depth: float = MIN_DEPTH,
               max_depth: float = MAX_DEPTH, pred_min_depth: float = 0.1,
               pred_max_depth: float = 100.0, **breakdown_kwargs):
    self.min_depth, self.max_depth = min_depth, max_depth
    self.pred_min_depth, self.pred_max_depth = pred_min_depth, pred_max_depth
    self._rows = {"": [], "_noscale": []}
    self._pose = {k: [] for k in POSE_METRICS}
    self.breakdown = DepthBreakdown(**breakdown_kwargs)

  def add_disparities(self, gt_depth: np.ndarray, disp: np.ndarray,
                      labels: np.ndarray | None = None,
                      is_labeled: np.ndarray | None = None) -> None:
    """Adds a batch.

    Args:
      gt_depth: [B, H, W] metres (0 = invalid); an all-invalid image (e.g.
        the pipeline's padding) is skipped.
      disp: [B, h, w] or [B, h, w, 1] sigmoid disparity (any resolution).
      labels: [B, H, W] train ids for the class rows of the breakdown, or
        None (no class rows).
      is_labeled: [B] bool; images marked False add no class rows.
    """
    gt_depth = np.asarray(gt_depth)
    disp = np.asarray(disp)
    if disp.ndim == 4:
      disp = disp[..., 0]
    for i, (g, d) in enumerate(zip(gt_depth, disp)):
      pred = disp_to_depth(resize_disp(d, g.shape), self.pred_min_depth,
                           self.pred_max_depth)
      px = valid_pixels(g, pred, median_scaling=True,
                        min_depth=self.min_depth, max_depth=self.max_depth)
      if px is None:
        continue
      mask, gt, scaled, scale = px
      self._rows[""].append(dict(depth_errors(gt, scaled), scale=scale))
      lbl = None
      if labels is not None and (is_labeled is None or is_labeled[i]):
        lbl = labels[i]
      self.breakdown.add(mask, gt, scaled, lbl)
      self._rows["_noscale"].append(image_metrics(
          g, pred, median_scaling=False, min_depth=self.min_depth,
          max_depth=self.max_depth))

  def add_poses(self, gt_T: np.ndarray, pred_T: np.ndarray) -> None:
    """Adds [N, 4, 4] ground-truth and predicted centre->source transforms."""
    gt_T, pred_T = np.asarray(gt_T), np.asarray(pred_T)
    if gt_T.shape != pred_T.shape or gt_T.shape[-2:] != (4, 4):
      raise ValueError(f"pose shapes {gt_T.shape} (ground truth) and "
                       f"{pred_T.shape} (prediction); expected [N, 4, 4]")
    for g, p in zip(gt_T, pred_T):
      for k, v in pose_errors(g, p).items():
        # Only a motion direction may be undefined (a camera that does not
        # move); any other NaN (a diverged pose net) stays visible.
        if k == "pose_trans_angle_deg" and np.isnan(v):
          continue
        self._pose[k].append(v)

  @property
  def num_images(self) -> int:
    return len(self._rows[""])

  def result(self) -> dict[str, float]:
    """``{metric, metric_noscale, median_scale, num_images}`` and, with
    poses, ``POSE_METRICS`` and ``num_pose_snippets``."""
    out = {}
    for suffix, rows in self._rows.items():
      if not rows:
        continue
      for k in METRICS:
        out[k + suffix] = float(np.mean([r[k] for r in rows]))
    if self._rows[""]:
      out["median_scale"] = float(np.mean([r["scale"]
                                           for r in self._rows[""]]))
    if self._pose["pose_ate"]:
      for k, v in self._pose.items():
        out[k] = float(np.mean(v)) if v else float("nan")
      out["num_pose_snippets"] = float(len(self._pose["pose_ate"]))
    out["num_images"] = float(self.num_images)
    return out


def snippet_ate(gt_T: np.ndarray, pred_T: np.ndarray) -> float:
  """ATE of one 2-frame snippet: the source camera's position, scale-aligned.

  The centre camera is the origin of the snippet (both trajectories start
  at 0), so the trajectory is ``[0, t]`` with ``t`` the translation of
  ``inv(cam_T_cam)`` (camera centre of the source frame in the centre
  frame); the scale ``sum(gt * pred) / sum(pred^2)`` is fitted by least
  squares (monodepth2 ``compute_ate``).

  Args:
    gt_T, pred_T: [4, 4] centre->source transforms.

  Returns:
    RMSE of the aligned positions (over the 2 frames).
  """
  def centre(T):
    return np.linalg.inv(np.asarray(T, np.float64))[:3, 3]
  gt = np.stack([np.zeros(3), centre(gt_T)])
  pred = np.stack([np.zeros(3), centre(pred_T)])
  denom = np.sum(pred ** 2)
  scale = np.sum(gt * pred) / denom if denom > 0 else 0.0
  err = pred * scale - gt
  return float(np.sqrt(np.sum(err ** 2) / gt.shape[0]))


# Both angles use atan2(sin, cos) rather than arccos(cos): arccos loses
# half the digits near 0, so a float32 prediction equal to the ground truth
# would read as ~0.03 degrees instead of ~1e-5.


def _rotation_angle_deg(r: np.ndarray) -> float:
  """Angle of a 3x3 rotation matrix in degrees (0..180)."""
  r = np.asarray(r, np.float64)
  sin = 0.5 * np.linalg.norm([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0],
                              r[1, 0] - r[0, 1]])
  cos = 0.5 * (np.trace(r) - 1.0)
  return float(np.degrees(np.arctan2(sin, cos)))


def _vector_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
  """Angle between two 3-vectors in degrees; NaN if either is ~zero."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if np.linalg.norm(a) < 1e-9 or np.linalg.norm(b) < 1e-9:
    return float("nan")
  return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)),
                                     np.dot(a, b))))


def pose_errors(gt_T: np.ndarray, pred_T: np.ndarray) -> dict[str, float]:
  """Errors of one 2-frame snippet (see the module docstring).

  Args:
    gt_T, pred_T: [4, 4] centre->neighbour transforms (``cam_T_cam``
      convention: centre-camera points to neighbour-camera points).

  Returns:
    ``{"pose_ate", "pose_trans_angle_deg", "pose_rot_deg"}``; the angle of
    the translation is NaN when either camera does not move.
  """
  gt_T = np.asarray(gt_T, np.float64)
  pred_T = np.asarray(pred_T, np.float64)
  # The neighbour's camera centre in the centre camera's coordinates: the
  # direction of motion, independent of how the rotation is split off.
  gt_c = np.linalg.inv(gt_T)[:3, 3]
  pred_c = np.linalg.inv(pred_T)[:3, 3]
  return {
      "pose_ate": snippet_ate(gt_T, pred_T),
      "pose_trans_angle_deg": _vector_angle_deg(pred_c, gt_c),
      "pose_rot_deg": _rotation_angle_deg(pred_T[:3, :3].T @ gt_T[:3, :3]),
  }


def evaluate(predict_fn: Callable[[dict[str, Any]], dict[str, Any]],
             batches: Iterable[dict[str, Any]], **kwargs) -> dict[str, float]:
  """``accumulate(...).result()``: the flat depth (and pose) metrics."""
  return accumulate(predict_fn, batches, **kwargs).result()


def accumulate(predict_fn: Callable[[dict[str, Any]], dict[str, Any]],
               batches: Iterable[dict[str, Any]], **kwargs
               ) -> DepthAccumulator:
  """Runs ``predict_fn`` over ``batches`` and accumulates depth (and pose).

  Args:
    predict_fn: ``batch -> {"disp": [B, h, w, 1], "cam_T_cam"?: {f: [B,4,4]},
      "offsets"?: frame offsets}`` (host numpy or jax arrays). The frames of
      ``gt_cam_T_cam`` are in the sorted order of the offsets: ``offsets``
      if given, else ``cam_T_cam``'s keys plus 0.
    batches: iterable of batch dicts with ``depth`` [B, H, W] and, for the
      pose errors, ``gt_cam_T_cam`` [B, T, 4, 4] (``with_pose`` streams);
      ``label`` [B, H, W] (and ``is_labeled`` [B]) add the class rows of
      the error budget.
    **kwargs: passed to ``DepthAccumulator``.

  Returns:
    The ``DepthAccumulator``: ``result()`` has the pose keys only when both
    the batch has ``gt_cam_T_cam`` and the prediction ``cam_T_cam``;
    ``breakdown.result()`` is the error budget.
  """
  acc = DepthAccumulator(**kwargs)
  for batch in batches:
    if "depth" not in batch:
      raise KeyError(
          "depth evaluation needs ground-truth 'depth' in the batch; set "
          "with_depth=True on the evaluated stream config (has keys "
          f"{sorted(batch)})")
    out = predict_fn(batch)
    valid = np.asarray(batch["index"]) >= 0 if "index" in batch else None
    gt = np.asarray(batch["depth"])
    disp = np.asarray(out["disp"])
    lbl = np.asarray(batch["label"]) if "label" in batch else None
    labeled = (np.asarray(batch["is_labeled"]) if "is_labeled" in batch
               else None)
    if valid is not None:
      gt, disp = gt[valid], disp[valid]
      lbl = None if lbl is None else lbl[valid]
      labeled = None if labeled is None else labeled[valid]
    acc.add_disparities(gt, disp, lbl, labeled)
    if "gt_cam_T_cam" in batch and "cam_T_cam" in out:
      gt_T = np.asarray(batch["gt_cam_T_cam"])
      offsets = sorted(out["offsets"] if "offsets" in out else
                       set(out["cam_T_cam"]) | {0})
      if gt_T.ndim != 4 or gt_T.shape[1] != len(offsets):
        raise ValueError(
            f"gt_cam_T_cam has shape {gt_T.shape}; expected [B, "
            f"{len(offsets)}, 4, 4] for frame offsets {tuple(offsets)}")
      for t, f in enumerate(offsets):
        if f == 0:
          continue
        g, p = gt_T[:, t], np.asarray(out["cam_T_cam"][f])
        if valid is not None:
          g, p = g[valid], p[valid]
        acc.add_poses(g, p)
  return acc


# Anchor colours of matplotlib's "magma" map at 0, 0.25, 0.5, 0.75, 1.
_MAGMA = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121],
                   [252, 137, 97], [252, 253, 191]], np.float32)


def colorize(x: np.ndarray, lo: float | None = None,
             hi: float | None = None) -> np.ndarray:
  """Maps ``[H, W]`` values to magma colours (uint8 ``[H, W, 3]``).

  Values are normalised to [0, 1] with ``lo``/``hi`` (default: the map's
  2nd and 98th percentiles) and interpolated between 5 anchor colours.
  """
  x = np.asarray(x, np.float32)
  lo = np.percentile(x, 2) if lo is None else lo
  hi = np.percentile(x, 98) if hi is None else hi
  t = np.clip((x - lo) / max(hi - lo, 1e-8), 0.0, 1.0) * (len(_MAGMA) - 1)
  i = np.minimum(t.astype(np.int32), len(_MAGMA) - 2)
  f = (t - i)[..., None]
  return ((1 - f) * _MAGMA[i] + f * _MAGMA[i + 1]).round().astype(np.uint8)


def panels(images: np.ndarray, disp: np.ndarray,
           gt_depth: np.ndarray | None = None,
           max_images: int = 4) -> np.ndarray:
  """TensorBoard panels: input | predicted disparity | GT inverse depth.

  Args:
    images: [B, H, W, 3] uint8 (or float in [0, 1]).
    disp: [B, h, w] predicted disparity.
    gt_depth: [B, H, W] metres (0 = invalid) or None.
    max_images: at most this many rows.

  Returns:
    [N, H, 2W or 3W, 3] uint8.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
  out = []
  for b in range(min(max_images, images.shape[0])):
    h, w = images.shape[1:3]
    row = [images[b], colorize(resize_disp(disp[b], (h, w)))]
    if gt_depth is not None:
      g = np.asarray(gt_depth[b], np.float32)
      inv = np.where(g > 0, 1.0 / np.maximum(g, 1e-6), 0.0)
      valid = inv[g > 0]
      lo, hi = ((np.percentile(valid, 2), np.percentile(valid, 98))
                if valid.size else (0.0, 1.0))
      row.append(np.where((g > 0)[..., None], colorize(inv, lo, hi), 0)
                 .astype(np.uint8))
    out.append(np.concatenate(row, axis=1))
  return np.stack(out)
