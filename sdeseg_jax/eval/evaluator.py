"""Segmentation evaluator plug-in for the training loop (REFERENCE_SPEC §7).

``SegmentationEvaluator(predict_fn, batches_fn, ...)`` runs a model over a
validation stream and accumulates one confusion matrix per *model* (e.g.
the student and the EMA teacher) on device; scores are computed on the host
(``eval.segmentation.segmentation_scores``). ``run(models)`` yields
``(name, value)`` pairs; ``evaluate`` keeps the per-class IoUs, tracks the
best mIoU so far per model (kept apart from the latest/final value) and
writes per-class IoU tables (``eval/tables.py``) to a directory.

Protocols:
* ``paper``: the stream delivers labels at the evaluation size (1024x512,
  NEAREST-downsampled from 2048x1024, as the reference); the network sees
  the image at that size.
* ``full``: the stream delivers images and labels at full resolution
  (2048x1024); the image is resized (bilinear, antialiased) to
  ``input_size`` for the network and the logits are upsampled bilinearly
  with align_corners=True to the label size.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import segmentation
from sdeseg_jax.eval import tables

# (variables, images [B, H, W, 3] float in [0, 1]) -> logits [B, h, w, C].
PredictFn = Callable[[Any, jax.Array], jax.Array]
PROTOCOLS = ("paper", "full")


def colorize_labels(labels: np.ndarray) -> np.ndarray:
  """Train ids ``[..., H, W]`` -> Cityscapes colours ``[..., H, W, 3]`` uint8.

  Ignore (250) and out-of-range ids are black.
  """
  lab = np.asarray(labels)
  colors = np.asarray(labels_lib.TRAIN_ID_COLORS, np.uint8)
  valid = (lab >= 0) & (lab < len(colors))
  out = colors[np.where(valid, lab, 0)]
  out[~valid] = 0
  return out


class SegmentationEvaluator:
  """Confusion-matrix mIoU of one or several models over a stream.

  Args:
    predict_fn: ``(variables, images) -> logits``; jitted here.
    batches_fn: ``() -> iterable of batches`` with ``color`` ``[B, T, H, W,
      3]`` (or ``image`` ``[B, H, W, 3]``) uint8 and ``label`` ``[B, H, W]``;
      called once per evaluation (a fresh pass over the split).
    num_classes: C.
    protocol: ``paper`` or ``full`` (module docstring).
    input_size: ``(H, W)`` network input for ``full``; ignored for
      ``paper``.
    centre_index: index of the annotated frame in ``color``.
    class_names: names for the per-class scalars.
  """

  def __init__(self, predict_fn: PredictFn,
               batches_fn: Callable[[], Iterable[Mapping[str, Any]]], *,
               num_classes: int = 19, protocol: str = "paper",
               input_size: Sequence[int] = (),
               centre_index: int = 0,
               class_names: Sequence[str] = segmentation.CITYSCAPES_CLASSES):
    if protocol not in PROTOCOLS:
      raise ValueError(f"config.eval.protocol={protocol!r}; choose one of "
                       f"{PROTOCOLS}")
    if protocol == "full" and len(input_size) != 2:
      raise ValueError("protocol 'full' needs config.eval.input_size (H, W) "
                       f"of the network input, got {tuple(input_size)}")
    self.num_classes = num_classes
    self.protocol = protocol
    self.batches_fn = batches_fn
    self.centre_index = centre_index
    self.class_names = tuple(class_names)
    size = tuple(int(s) for s in input_size)

    def update(conf, variables, images, labels):
      x = images.astype(jnp.float32) / 255.0
      if protocol == "full" and x.shape[1:3] != size:
        x = jax.image.resize(x, (x.shape[0], *size, 3), "bilinear",
                             antialias=True)
      logits = predict_fn(variables, x)
      return segmentation.update_from_logits(conf, logits, labels)

    self._update = jax.jit(update)
    self.best: dict[str, float] = {}
    self.best_step: dict[str, int] = {}

  def _images(self, batch: Mapping[str, Any]) -> jax.Array:
    if "color" in batch:
      return batch["color"][:, self.centre_index]
    return batch["image"]

  def confusions(self, models: Mapping[str, Any]) -> dict[str, jax.Array]:
    """One pass over the stream; ``{model: [C, C] uint32}`` on device."""
    confs = {k: segmentation.init_confusion(self.num_classes)
             for k in models}
    for batch in self.batches_fn():
      images = self._images(batch)
      for name, variables in models.items():
        confs[name] = self._update(confs[name], variables, images,
                                   batch["label"])
    return confs

  def evaluate(self, models: Mapping[str, Any], step: int | None = None
               ) -> dict[str, dict[str, Any]]:
    """Scores every model and updates the best-so-far records.

    Args:
      models: name -> variables accepted by ``predict_fn``.
      step: training step (for ``best_step``).

    Returns:
      ``{model: segmentation_scores(...) + {"best_miou", "is_best"}}``.
    """
    out = {}
    for name, conf in self.confusions(models).items():
      scores = segmentation.segmentation_scores(conf)
      miou = scores["miou"]
      is_best = bool(np.isfinite(miou)) and miou > self.best.get(name, -1.0)
      if is_best:
        self.best[name] = miou
        self.best_step[name] = -1 if step is None else int(step)
      scores["best_miou"] = self.best.get(name, float("nan"))
      scores["is_best"] = is_best
      out[name] = scores
    return out

  def run(self, models: Mapping[str, Any], step: int | None = None
          ) -> Iterator[tuple[str, float]]:
    """Yields ``("<model>/miou", v)``, ``("<model>/best_miou", v)``,
    overall/mean accuracy and ``("<model>/iou/<class>", v)``."""
    for name, s in self.evaluate(models, step).items():
      yield f"{name}/miou", float(s["miou"])
      yield f"{name}/best_miou", float(s["best_miou"])
      yield f"{name}/overall_acc", float(s["overall_acc"])
      yield f"{name}/mean_acc", float(s["mean_acc"])
      for c, v in enumerate(s["iou"]):
        cname = (self.class_names[c] if c < len(self.class_names)
                 else str(c))
        yield f"{name}/iou/{cname}", float(v)


def write_tables(directory: str, scores: Mapping[str, Mapping[str, Any]],
                 *, step: int, final: bool, prefix: str = "",
                 class_names: Sequence[str] | None = None) -> list[str]:
  """Writes per-class IoU tables of an evaluation (markdown).

  Files: ``iou_step<step>.md`` (every evaluation), ``iou_final.md`` (when
  ``final``) and ``iou_best_<model>.md`` (when that model's mIoU is the
  best so far), each with one row per model.

  Args:
    directory: output folder (created).
    scores: ``SegmentationEvaluator.evaluate`` output.
    step: training step.
    final: this is the last evaluation of the run.
    prefix: file name prefix (e.g. the protocol).
    class_names: column names (default: the Cityscapes short names).

  Returns:
    The written paths.
  """
  rows = {name: s["iou"] for name, s in scores.items()}
  n = len(next(iter(rows.values())))
  names = tuple(class_names) if class_names is not None else (
      tables.SHORT_NAMES if n <= len(tables.SHORT_NAMES)
      else tuple(str(i) for i in range(n)))
  if len(names) < n:
    names = names + tuple(str(i) for i in range(len(names), n))
  paths = [os.path.join(directory, f"{prefix}iou_step{step}.md")]
  if final:
    paths.append(os.path.join(directory, f"{prefix}iou_final.md"))
  for name, s in scores.items():
    if s.get("is_best"):
      p = os.path.join(directory, f"{prefix}iou_best_{name}.md")
      tables.write_iou_table(p, {f"{name} (step {step})": s["iou"]},
                             class_names=names)
  for p in paths:
    tables.write_iou_table(p, rows, class_names=names)
  return paths
