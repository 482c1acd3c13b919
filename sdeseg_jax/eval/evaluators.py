"""Evaluators: plug-ins of the training loop, one output layout.

An evaluator takes ``{model name: variables}`` (e.g. the student and the EMA
teacher, ``train.toolkit.models_to_evaluate``) and the training step, runs
the task's ``predict(variables, batch)`` over a validation stream and

* returns scalars for TensorBoard (``"<model>/<metric>"``);
* writes ``<workdir>/eval/<name>/step_<N>.json`` and ``step_<N>.md`` and
  ``latest.json`` (process 0 only);
* keeps a JSON-able state (``get_state`` / ``set_state``, the best mIoU so
  far per model) that ``trainer.fit`` saves in every checkpoint, so a
  resumed run knows the best figures of the steps before it.

Kinds (``build(kind, ...)``; ``KINDS``):

* ``segmentation``: one confusion matrix per model over the stream, mIoU
  and per-class IoU in percent, the class subsets of ``class_subsets``
  (e.g. Synthia's 16 and 13 classes), ``miou_rel`` (100 * mIoU /
  ``fully_supervised_miou``, the papers' relative column), best-so-far per
  model. Protocols: ``paper`` (the stream delivers labels at the evaluation
  size, the network sees that image) and ``full`` (full-resolution labels;
  the image is resized bilinearly, antialiased, to ``input_size`` and the
  logits are upsampled with align_corners=True to the label size).
* ``depth``: monodepth2 depth metrics (median-scaled) of ``disp`` against
  the stream's ``depth``, and pose errors with ``gt_cam_T_cam``
  (``eval.depth.evaluate``); the record and table add each model's error
  budget by class (with the stream's ``label``), distance and row band
  (``eval.depth.DepthBreakdown``).

Multi-host: batches come from the loader as per-process host arrays; the
evaluator puts them on the mesh itself, jits with replicated outputs, and
gathers host data across processes only with
``multihost_utils.process_allgather``. It never ``device_get``s a
data-sharded array.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import depth as depth_eval
from sdeseg_jax.eval import segmentation
from sdeseg_jax.eval import tables
from sdeseg_jax.utils import sharding as sharding_lib

# (variables, batch with "color" [B, T, H, W, 3]) -> {"logits", "disp", ...}
PredictFn = Callable[[Any, Mapping[str, Any]], Mapping[str, jax.Array]]
BatchesFn = Callable[[], Iterable[Mapping[str, Any]]]
PROTOCOLS = ("paper", "full")
KINDS = ("segmentation", "depth")


def gather(tree: Any) -> Any:
  """Per-process host arrays -> the global arrays (numpy), on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _nan_to_none(x):
  return None if isinstance(x, float) and np.isnan(x) else x


def _jsonable(x):
  if isinstance(x, np.ndarray):
    return [_nan_to_none(float(v)) if x.dtype.kind == "f" else v.item()
            for v in x.ravel()] if x.ndim == 1 else x.tolist()
  if isinstance(x, (np.floating, float)):
    return _nan_to_none(float(x))
  if isinstance(x, np.integer):
    return int(x)
  raise TypeError(f"not JSON-able: {type(x)}")


def first_batch(batches_fn: BatchesFn) -> Mapping[str, Any]:
  """The first batch of a pass (the pass is closed after it)."""
  it = iter(batches_fn())
  try:
    return next(it)
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()


def output_dir(workdir: str, name: str) -> str:
  """``<workdir>/eval/<name>``: where evaluator ``name`` writes."""
  return os.path.join(workdir, "eval", name)


def write_record(workdir: str, name: str, step: int, record: dict[str, Any],
                 table: str | None = None) -> None:
  """``step_<N>.json`` (+ ``.md``) and ``latest.json`` of one evaluation."""
  if jax.process_index() != 0 or not workdir:
    return
  out = output_dir(workdir, name)
  os.makedirs(out, exist_ok=True)
  text = json.dumps(dict(record, step=step), indent=1, default=_jsonable)
  for fname in (f"step_{step}.json", "latest.json"):
    with open(os.path.join(out, fname + ".tmp"), "w") as f:
      f.write(text)
    os.replace(os.path.join(out, fname + ".tmp"), os.path.join(out, fname))
  if table is not None:
    with open(os.path.join(out, f"step_{step}.md"), "w") as f:
      f.write(table)


def read_latest(workdir: str, name: str) -> dict[str, Any] | None:
  """The ``latest.json`` record of evaluator ``name``, or None."""
  path = os.path.join(output_dir(workdir, name), "latest.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


class SegmentationEvaluator:
  """Confusion-matrix mIoU of one or several models over a stream.

  Args:
    predict_fn: the task's ``predict(variables, batch) -> {"logits"}``; it
      gets ``{"color": [B, 1, h, w, 3]}`` (the centre frame, float in
      [0, 1], resized for ``full``).
    batches_fn: ``() -> iterable of host batches`` with ``color`` ``[B, T,
      H, W, 3]`` uint8 and ``label`` ``[B, H, W]``; a fresh pass per call.
    mesh: the data mesh.
    workdir: run folder ("" = write nothing).
    name: output folder / scalar prefix.
    num_classes: C.
    protocol: ``paper`` or ``full`` (module docstring).
    input_size: ``(H, W)`` network input for ``full``.
    offsets: the stream's frame offsets (the centre frame is evaluated).
    class_names: per-class scalar names.
    class_subsets: ``((name, train ids), ...)`` extra mIoU columns.
    fully_supervised_miou: the baseline's mIoU in percent; > 0 adds
      ``miou_rel`` of ``relative_to`` (a subset name, "" = ``miou``).
    table_classes: columns of the markdown table (() = all).
    main_model: the model whose figures are also the record's top level.
  """

  def __init__(self, predict_fn: PredictFn, batches_fn: BatchesFn, *,
               mesh=None, workdir: str = "", name: str = "segmentation",
               num_classes: int = 19, protocol: str = "paper",
               input_size: Sequence[int] = (), offsets: Sequence[int] = (0,),
               class_names: Sequence[str] = segmentation.CITYSCAPES_CLASSES,
               class_subsets: Sequence[tuple[str, Sequence[int]]] = (),
               fully_supervised_miou: float = 0.0, relative_to: str = "",
               table_classes: Sequence[int] = (),
               main_model: str = "student"):
    if protocol not in PROTOCOLS:
      raise ValueError(f"config.eval.protocol={protocol!r}; choose one of "
                       f"{PROTOCOLS}")
    if protocol == "full" and len(input_size) != 2:
      raise ValueError("protocol 'full' needs config.eval.input_size (H, W) "
                       f"of the network input, got {tuple(input_size)}")
    self.name, self.workdir, self.mesh = name, workdir, mesh
    self.num_classes = num_classes
    self.protocol = protocol
    self.batches_fn = batches_fn
    self.centre_index = tuple(sorted(offsets)).index(0)
    self.class_names = tuple(class_names)
    self.class_subsets = tuple((n, tuple(ids)) for n, ids in class_subsets)
    self.fully_supervised_miou = fully_supervised_miou
    self.relative_to = relative_to
    self.table_classes = tuple(table_classes) or None
    self.main_model = main_model
    size = tuple(int(s) for s in input_size)
    self._predict_fn = predict_fn

    def images(color):
      x = color.astype(jnp.float32) / 255.0
      if protocol == "full" and x.shape[1:3] != size:
        x = jax.image.resize(x, (x.shape[0], *size, 3), "bilinear",
                             antialias=True)
      return x

    def update(conf, variables, color, labels):
      logits = predict_fn(variables, {"color": images(color)[:, None]})
      return segmentation.update_from_logits(conf, logits["logits"], labels)

    def predict_labels(variables, color):
      logits = predict_fn(variables, {"color": images(color)[:, None]})
      return jnp.argmax(logits["logits"], -1)

    repl = None if mesh is None else sharding_lib.replicated(mesh)
    self._update = jax.jit(update, out_shardings=repl)
    self._labels = jax.jit(predict_labels, out_shardings=repl)
    self.best: dict[str, float] = {}
    self.best_step: dict[str, int] = {}
    self.latest: dict[str, Any] | None = None  # the last record, with step

  # -- state kept in checkpoints ---------------------------------------------

  def get_state(self) -> dict[str, Any]:
    return {"best": dict(self.best), "best_step": dict(self.best_step)}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self.best = {k: float(v) for k, v in state.get("best", {}).items()}
    self.best_step = {k: int(v) for k, v in
                      state.get("best_step", {}).items()}

  # -- evaluation --------------------------------------------------------------

  def _device(self, batch):
    """Centre frames and labels of a host batch, on the mesh."""
    x = {"color": np.asarray(batch["color"])[:, self.centre_index],
         "label": np.asarray(batch["label"])}
    if self.mesh is None:
      return x
    return sharding_lib.host_to_global(x, self.mesh)

  def confusions(self, models: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One pass over the stream; ``{model: [C, C]}`` (replicated)."""
    confs = {k: segmentation.init_confusion(self.num_classes)
             for k in models}
    for batch in self.batches_fn():
      b = self._device(batch)
      for name, variables in models.items():
        confs[name] = self._update(confs[name], variables, b["color"],
                                   b["label"])
    return {k: np.asarray(jax.device_get(v)) for k, v in confs.items()}

  def scores(self, conf: np.ndarray) -> dict[str, Any]:
    """Percent figures of one confusion matrix (``iou``: fractions)."""
    s = segmentation.segmentation_scores(conf)
    res = {"miou": 100 * s["miou"], "pixel_acc": 100 * s["overall_acc"],
           "mean_acc": 100 * s["mean_acc"], "iou": np.asarray(s["iou"])}
    for name, ids in self.class_subsets:
      res[name] = 100 * segmentation.subset_miou(s["iou"], ids)
    if self.fully_supervised_miou > 0:
      main = res[self.relative_to] if self.relative_to else res["miou"]
      res["miou_rel"] = 100 * main / self.fully_supervised_miou
    return res

  def evaluate(self, models: Mapping[str, Any], step: int
               ) -> dict[str, float]:
    """Scores every model, updates the best so far, writes the record.

    Returns:
      ``{"<model>/miou", "<model>/best_miou", "<model>/<subset>", ...,
      "<model>/iou/<class>"}``.
    """
    per_model, scalars = {}, {}
    confs = self.confusions(models)
    for name, conf in confs.items():
      s = self.scores(conf)
      miou = s["miou"]
      if np.isfinite(miou) and miou > self.best.get(name, -1.0):
        self.best[name] = float(miou)
        self.best_step[name] = int(step)
      s["best_miou"] = self.best.get(name, float("nan"))
      s["best_step"] = self.best_step.get(name, -1)
      per_model[name] = s
      for k, v in s.items():
        if k != "iou":
          scalars[f"{name}/{k}"] = float(v)
      for c, v in enumerate(s["iou"]):
        cname = (self.class_names[c] if c < len(self.class_names)
                 else str(c))
        scalars[f"{name}/iou/{cname}"] = float(v)
    record = self.record(per_model, confs)
    table = tables.format_iou_table(
        {f"{n} (step {step})": s["iou"] for n, s in per_model.items()},
        class_ids=self.table_classes)
    write_record(self.workdir, self.name, step, record, table)
    self.latest = dict(record, step=int(step))
    return scalars

  def record(self, per_model, confs) -> dict[str, Any]:
    """The JSON record: the main model's figures at the top level, every
    other model's with a ``_<model>`` suffix, and ``models``."""
    record = {"protocol": self.protocol, "models": per_model}
    for name, s in per_model.items():
      suffix = "" if name == self.main_model else f"_{name}"
      for k in ("miou", "iou", "pixel_acc", "best_miou", "best_step",
                *[n for n, _ in self.class_subsets],
                *(("miou_rel",) if "miou_rel" in s else ())):
        record[k + suffix] = s[k]
    if self.main_model in confs:
      record["confusion"] = confs[self.main_model]
    return record

  def images(self, models: Mapping[str, Any], num: int
             ) -> dict[str, np.ndarray]:
    """``{"predictions": [N, H, (2 + M) W, 3]}``: image | GT | each model."""
    batch = first_batch(self.batches_fn)
    b = self._device(batch)
    host = gather({"color": np.asarray(batch["color"])[:, self.centre_index],
                   "label": np.asarray(batch["label"])})
    cols = [host["color"][:num], labels_lib.colorize_train_ids(
        host["label"][:num])]
    for variables in models.values():
      pred = np.asarray(jax.device_get(self._labels(variables, b["color"])))
      cols.append(labels_lib.colorize_train_ids(pred[:num]))
    return {"predictions": np.concatenate(cols, axis=2)}


class DepthEvaluator:
  """Depth (and pose) metrics of each model over a stream with ``depth``.

  Args:
    predict_fn: the task's ``predict(variables, batch) -> {"disp"[,
      "cam_T_cam"]}`` on ``{"color": [B, T, H, W, 3]}``.
    batches_fn: ``() -> iterable of host batches`` with ``color``,
      ``depth`` (and ``gt_cam_T_cam``, ``index``).
    mesh, workdir, name: as ``SegmentationEvaluator``.
    min_depth, max_depth: the prediction's depth range.
    offsets: the stream's sorted frame offsets.
    num_images: rows of the image panels.
  """

  def __init__(self, predict_fn: PredictFn, batches_fn: BatchesFn, *,
               mesh=None, workdir: str = "", name: str = "depth",
               min_depth: float = 0.1, max_depth: float = 100.0,
               offsets: Sequence[int] = (0,), num_images: int = 4):
    self.name, self.workdir, self.mesh = name, workdir, mesh
    self.batches_fn = batches_fn
    self.min_depth, self.max_depth = min_depth, max_depth
    self.offsets = tuple(sorted(offsets))
    self.num_images = num_images
    repl = None if mesh is None else sharding_lib.replicated(mesh)
    self._predict = jax.jit(predict_fn, out_shardings=repl)

  def get_state(self) -> dict[str, Any]:
    return {}

  def set_state(self, state: Mapping[str, Any]) -> None:
    del state

  def _on_mesh(self, batch):
    x = {"color": np.asarray(batch["color"])}
    return x if self.mesh is None else sharding_lib.host_to_global(
        x, self.mesh)

  def metrics(self, variables) -> dict[str, float]:
    """``eval.depth.evaluate`` of one model over the stream."""
    return self.accumulate(variables).result()

  def accumulate(self, variables) -> depth_eval.DepthAccumulator:
    """``eval.depth.accumulate`` of one model over the stream: metrics
    (``.result()``) and error budget (``.breakdown.result()``)."""
    def predict_fn(host_batch):
      out = jax.device_get(self._predict(variables,
                                         self._on_mesh(host_batch)))
      out["offsets"] = self.offsets
      return out

    def batches():
      for b in self.batches_fn():
        yield {"_host": b, **gather(
            {k: b[k] for k in ("depth", "index", "gt_cam_T_cam", "label",
                               "is_labeled") if k in b})}

    return depth_eval.accumulate(
        lambda b: predict_fn(b["_host"]), batches(),
        pred_min_depth=self.min_depth, pred_max_depth=self.max_depth)

  def evaluate(self, models: Mapping[str, Any], step: int
               ) -> dict[str, float]:
    """Depth metrics per model; writes the record (with each model's error
    budget under ``breakdown``) and table; ``"<model>/<metric>"``."""
    accs = {name: self.accumulate(v) for name, v in models.items()}
    per_model = {name: a.result() for name, a in accs.items()}
    budgets = {name: a.breakdown.result() for name, a in accs.items()}
    record = {"models": per_model, "breakdown": budgets}
    if len(per_model) == 1:
      record.update(next(iter(per_model.values())))
    table = _metrics_table(per_model) + "".join(
        "\n" + depth_eval.format_breakdown(
            b, f"{name} (step {step}): error budget, median-scaled, "
            "pooled over pixels")
        for name, b in budgets.items())
    write_record(self.workdir, self.name, step, record, table)
    return {f"{m}/{k}": float(v) for m, r in per_model.items()
            for k, v in r.items()}

  def images(self, models: Mapping[str, Any], num: int
             ) -> dict[str, np.ndarray]:
    """``{"depth_panels"}``: image | disparity | GT inverse depth."""
    batch = first_batch(self.batches_fn)
    host = gather({k: np.asarray(batch[k]) for k in ("color", "depth")
                   if k in batch})
    variables = next(iter(models.values()))
    out = jax.device_get(self._predict(variables, self._on_mesh(batch)))
    centre = (self.offsets.index(0) if host["color"].shape[1] > 1 else 0)
    return {"depth_panels": depth_eval.panels(
        host["color"][:, centre], out["disp"][..., 0], host.get("depth"),
        max_images=num)}


def _metrics_table(per_model: Mapping[str, Mapping[str, float]]) -> str:
  cols = sorted({k for r in per_model.values() for k in r})
  lines = ["| model | " + " | ".join(cols) + " |",
           "|---|" + "---:|" * len(cols)]
  for name, r in per_model.items():
    lines.append(f"| {name} | " + " | ".join(
        f"{r[c]:.4f}" if c in r else "-" for c in cols) + " |")
  return "\n".join(lines) + "\n"


def build(kind: str, predict_fn: PredictFn, batches_fn: BatchesFn,
          **kwargs):
  """An evaluator of ``kind`` (``KINDS``); ``kwargs`` go to its class."""
  if kind == "segmentation":
    return SegmentationEvaluator(predict_fn, batches_fn, **kwargs)
  if kind == "depth":
    return DepthEvaluator(predict_fn, batches_fn, **kwargs)
  raise ValueError(f"config.eval: unknown evaluator {kind!r}; choose one of "
                   f"{KINDS}")


def run_all(evaluators: Sequence[Any], models: Mapping[str, Any],
            step: int) -> dict[str, float]:
  """Every evaluator's scalars, prefixed with its name."""
  out = {}
  for ev in evaluators:
    out.update({f"{ev.name}/{k}": v
                for k, v in ev.evaluate(models, step).items()})
  return out
