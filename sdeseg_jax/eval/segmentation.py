"""Segmentation evaluation: confusion matrix on device, scores on host.

The reference (`evaluation/metrics.py: runningScore`) accumulates one
confusion matrix confusion[gt, pred] over the whole validation set, skipping
pixels whose GT is outside [0, C) (ignore 250), and reports

  IoU_c = diag / (rowsum + colsum - diag),   mIoU = nanmean_c IoU_c,

plus overall accuracy, mean class accuracy and frequency-weighted IoU.
Classes that never occur in GT nor prediction have IoU NaN and are left out
of the mean.

Protocols:
* paper (`downsample_label`): labels NEAREST-downsampled 2048x1024 ->
  1024x512, which equals `label[1::2, 1::2]` (PIL samples floor((x+0.5)·s)).
* full resolution (`predict_labels` with the label size): logits are
  upsampled bilinearly with align_corners=True to the label size.
"""

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.data import labels
from sdeseg_jax.geometry.warp import resize_bilinear_align_corners

# Class names and the Synthia benchmark subsets come from the one
# label table of the project.
CITYSCAPES_CLASSES = labels.CLASS_NAMES
SYNTHIA_13_CLASSES = labels.SYNTHIA_13_TRAIN_IDS
SYNTHIA_16_CLASSES = labels.SYNTHIA_16_TRAIN_IDS
IGNORE_INDEX = labels.IGNORE_INDEX


def init_confusion(num_classes: int = 19) -> jax.Array:
  """Zero confusion matrix [C, C] uint32 (rows GT, columns prediction).

  uint32 holds up to 4.29e9 pixels per cell: the 500 Cityscapes val images
  at 2048x1024 are 1.05e9 pixels in total.

  Args:
    num_classes: C.

  Returns:
    uint32 [C, C] zeros.
  """
  return jnp.zeros((num_classes, num_classes), jnp.uint32)


def update_confusion(conf: jax.Array, labels: jax.Array,
                     preds: jax.Array) -> jax.Array:
  """Adds a batch to the confusion matrix (jit-able, fixed shapes).

  Pixels whose label or prediction is outside [0, C) (e.g. 250) are skipped.

  Args:
    conf: uint32 [C, C].
    labels: int [...] GT train ids.
    preds: int [...] predicted train ids, same shape as `labels`.

  Returns:
    uint32 [C, C].
  """
  if labels.shape != preds.shape:
    raise ValueError(
        f"update_confusion: labels {labels.shape} and preds {preds.shape} "
        f"must have the same shape.")
  c = conf.shape[0]
  labels = labels.astype(jnp.int32).reshape(-1)
  preds = preds.astype(jnp.int32).reshape(-1)
  valid = (labels >= 0) & (labels < c) & (preds >= 0) & (preds < c)
  idx = jnp.where(valid, labels * c + preds, 0)
  counts = jnp.zeros((c * c,), jnp.uint32).at[idx].add(
      valid.astype(jnp.uint32))
  return conf + counts.reshape(c, c).astype(conf.dtype)


def predict_labels(logits: jax.Array,
                   label_hw: Optional[Tuple[int, int]] = None) -> jax.Array:
  """Argmax prediction, upsampling the logits to the label size if needed.

  The reference upsamples with align_corners=True. Like
  `cross_entropy2d`, the resize happens only when *both* sides differ.

  Args:
    logits: float [B, h, w, C].
    label_hw: (H, W) of the labels, or None to keep the logits' size.

  Returns:
    int32 [B, H, W].
  """
  if label_hw is not None:
    h, w = logits.shape[1:3]
    if h != label_hw[0] and w != label_hw[1]:
      logits = resize_bilinear_align_corners(logits, label_hw)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def update_from_logits(conf: jax.Array, logits: jax.Array,
                       labels: jax.Array) -> jax.Array:
  """`predict_labels` at the label size, then `update_confusion` (jit-able).

  Args:
    conf: uint32 [C, C].
    logits: float [B, h, w, C].
    labels: int [B, H, W] train ids, 250 = ignore.

  Returns:
    uint32 [C, C].
  """
  preds = predict_labels(logits, labels.shape[1:3])
  if preds.shape != labels.shape:
    raise ValueError(
        f"update_from_logits: logits {logits.shape} cannot be brought to the "
        f"label size {labels.shape} (both sides must differ or match).")
  return update_confusion(conf, labels, preds)


def downsample_label(label, out_hw: Tuple[int, int]):
  """PIL NEAREST resize of a label map: source index floor((i + 0.5)·s).

  For an exact 2x downsample this is `label[..., 1::2, 1::2]`. Equal to PIL
  for integer factors; for non-integer ratios PIL's own rounding of the
  sample positions can pick a neighbouring pixel at exact ties.

  Args:
    label: integer [..., H, W] (numpy or jax).
    out_hw: (H', W').

  Returns:
    [..., H', W'] of the same array type.
  """
  h, w = label.shape[-2:]
  oh, ow = out_hw
  ys = np.floor((np.arange(oh) + 0.5) * (h / oh)).astype(np.int64)
  xs = np.floor((np.arange(ow) + 0.5) * (w / ow)).astype(np.int64)
  ys = np.minimum(ys, h - 1)
  xs = np.minimum(xs, w - 1)
  return label[..., ys[:, None], xs[None, :]]


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  if np.all(np.isnan(x)):
    return float("nan")
  return float(np.nanmean(x))


def segmentation_scores(conf) -> Dict[str, object]:
  """Scores from a confusion matrix (host, float64), as `runningScore`.

  Args:
    conf: [C, C] confusion matrix (rows GT, columns prediction).

  Returns:
    dict with `iou` (float64 [C], NaN for classes absent in GT and
    prediction), `miou`, `overall_acc`, `mean_acc`, `fwiou`.
  """
  hist = np.asarray(jax.device_get(conf)).astype(np.float64)
  if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
    raise ValueError(
        f"segmentation_scores: expected a square [C, C] matrix, got "
        f"{hist.shape}.")
  diag = np.diag(hist)
  rows = hist.sum(axis=1)
  cols = hist.sum(axis=0)
  total = hist.sum()
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = diag / (rows + cols - diag)
    acc_cls = diag / rows
    overall = diag.sum() / total if total > 0 else float("nan")
    freq = rows / total if total > 0 else np.zeros_like(rows)
  fw = freq > 0
  return {
      "iou": iou,
      "miou": _nanmean(iou),
      "overall_acc": float(overall),
      "mean_acc": _nanmean(acc_cls),
      "fwiou": float((freq[fw] * iou[fw]).sum()),
  }


def subset_miou(iou, class_ids: Sequence[int]) -> float:
  """nanmean of the IoUs of a class subset (e.g. `SYNTHIA_13_CLASSES`).

  Args:
    iou: float [C] per-class IoU.
    class_ids: train ids of the subset.

  Returns:
    float mIoU over the subset.
  """
  iou = np.asarray(iou, np.float64)
  ids = np.asarray(class_ids, np.int64)
  if ids.size == 0 or ids.min() < 0 or ids.max() >= iou.shape[0]:
    raise ValueError(
        f"subset_miou: class ids must be in [0, {iou.shape[0]}), got "
        f"{list(class_ids)}.")
  return _nanmean(iou[ids])
