"""The pieces every training task is built from (SDE, SSL, SSDA, ...).

A mode is its loss function plus a config: everything else it needs is here,
once, and no mode imports another mode's module.

* Inputs: ``to_float``, ``centre_index`` / ``centre_frame`` (the annotated
  frame of a ``[B, T, H, W, 3]`` stack), ``input_frames`` (all frames for the
  SDE loss, else the centre frame), ``example_batch`` (shapes for init).
* Forwards and losses: ``student_apply`` (a train-mode forward that threads
  the BatchNorm statistics), ``cam_T_cam`` (pose outputs -> transforms),
  ``sde_loss`` (monodepth2 loss of a network output and a sequence batch),
  ``labeled_seg_loss`` (supervised CE, PAD: mean with the intermediate CE).
* Initial weights (host side, fresh runs only): ``load_initial_weights``
  reads the ImageNet npz files of ``config.model`` and then an earlier run
  named by ``config.init`` (``init_rules`` + ``copy_variables``: one
  mechanism for copying by path patterns and for the SDE -> segmentation
  mapping).
* Evaluation inputs: ``eval_batches`` (one ordered pass over a split, host
  batches; only the caller puts them on devices).
* ``models_to_evaluate``: ``{"student", "teacher"}`` variables of a state.
* ``run``: the entry-point skeleton (train loader in, ``trainer.fit``,
  loaders closed whatever happens).

``config.init`` schema (one for every mode): ``checkpoint`` (an earlier
workdir or its ``checkpoints`` folder; "" = nothing), ``step`` (-1 = the
latest), and what to copy: ``patterns`` (regexes over ``/``-joined variable
paths without the collection, copied to the same path, e.g. ``"pose/.*"``;
a BatchNorm layer's statistics follow its parameters) and/or ``parts``
(``encoder``, ``decoders``, ``pose``: an SDE run's nets into a segmentation
net, ``sde_init_mapping``). A section may leave either key out.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax.constants import IGNORE_INDEX
from sdeseg_jax.geometry.transforms import transformation_from_parameters
from sdeseg_jax.losses.monodepth import monodepth_loss
from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.models import pose as pose_lib
from sdeseg_jax.models import pretrained
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import state as state_lib
from sdeseg_jax.train import trainer

Batch = dict[str, Any]


# -- inputs -----------------------------------------------------------------


def to_float(x: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1]; float images pass through."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def centre_index(offsets: Sequence[int]) -> int:
  """Position of offset 0 among the sorted frame offsets of a stream."""
  return tuple(sorted(offsets)).index(0)


def centre_frame(color: jax.Array, offsets: Sequence[int]) -> jax.Array:
  """``[B, T, H, W, 3]`` frames -> the centre frame ``[B, H, W, 3]`` float.

  ``T == 1`` is the centre frame whatever ``offsets`` say (a
  segmentation-only stream); otherwise ``T`` must equal ``len(offsets)``.
  Streams may carry neighbour frames they do not need (e.g. when they share
  a prepared dataset with the SDE stream); only the centre frame is used.
  """
  if color.shape[1] == 1:
    return to_float(color[:, 0])
  if color.shape[1] != len(offsets):
    raise ValueError(f"the stream delivers {color.shape[1]} frames but its "
                     f"frame offsets are {tuple(offsets)}")
  return to_float(color[:, centre_index(offsets)])


def input_frames(color: jax.Array, offsets: Sequence[int],
                 with_neighbours: bool) -> tuple[jax.Array, tuple[int, ...]]:
  """Network input ``[B, T', H, W, 3]`` float and its frame offsets.

  Args:
    color: ``[B, T, H, W, 3]`` frames (uint8 or float).
    offsets: the sorted frame offsets the frames stand for.
    with_neighbours: all frames (the SDE loss needs them) or only the centre
      frame (``T' = 1``, offsets ``(0,)``).
  """
  offsets = tuple(sorted(offsets))
  if with_neighbours:
    if color.shape[1] != len(offsets):
      raise ValueError(
          f"the SDE loss needs {len(offsets)} frames {offsets} per sample, "
          f"the stream delivers {color.shape[1]} (set its frame_offsets)")
    return to_float(color), offsets
  return centre_frame(color, offsets)[:, None], (0,)


def example_batch(stream: mlc.ConfigDict, batch_size: int, *,
                  key: str = "color_aug", role: str | None = None,
                  num_frames: int | None = None) -> dict[str, Any]:
  """ShapeDtypeStructs of the frames a task's ``init`` reads.

  Args:
    stream: the stream config (``crop_size`` or else ``image_size``,
      ``frame_offsets``).
    batch_size: global batch size.
    key: the batch key of the frames.
    role: nest the frames under this key (multi-stream batches).
    num_frames: T (default ``len(stream.frame_offsets)``).
  """
  h, w = (tuple(stream.crop_size) if len(stream.crop_size)
          else tuple(stream.image_size))
  t = len(stream.frame_offsets) if num_frames is None else num_frames
  out = {key: jax.ShapeDtypeStruct((batch_size, t, h, w, 3), jnp.uint8)}
  return {role: out} if role else out


# -- forwards and losses ----------------------------------------------------


def student_apply(model, params, batch_stats, x: jax.Array,
                  offsets: Sequence[int], rng: jax.Array, *,
                  pose: bool | None = None) -> tuple[dict[str, Any], Any]:
  """Train-mode forward of the student; returns ``(out, new_batch_stats)``.

  Args:
    model: the flax net (``SDENet`` or a joint segmentation net).
    params, batch_stats: its variables.
    x: ``[B, T, H, W, 3]`` float frames.
    offsets: their frame offsets.
    rng: dropout key.
    pose: run the pose net (default: when there are neighbour frames).
  """
  pose = len(offsets) > 1 if pose is None else pose
  out, new = model.apply(
      {"params": params, "batch_stats": batch_stats}, x, tuple(offsets),
      train=True, pose=pose, rngs={"dropout": rng}, mutable=["batch_stats"])
  return out, new["batch_stats"]


def predictions(out: dict[str, Any], offsets: Sequence[int] = (0,)
                ) -> dict[str, Any]:
  """The uniform ``predict`` dict of an eval-mode network output.

  ``logits`` ``[B, H, W, C]`` (segmentation nets), ``disp`` ``[B, H, W, 1]``
  (scale 0, nets with a depth head) and ``cam_T_cam`` ``{f: [B, 4, 4]}``
  (when the pose net ran on neighbour frames), each as the net has it; all
  float32.
  """
  res = {}
  if "semantics" in out:
    res["logits"] = out["semantics"].astype(jnp.float32)
  if "disp" in out:
    res["disp"] = out["disp"][0].astype(jnp.float32)
  if len(offsets) > 1 and "axisangle" in out:
    res["cam_T_cam"] = cam_T_cam(out, offsets)
  return res


def cam_T_cam(out: dict[str, Any], offsets) -> dict[int, jax.Array]:
  """``{f: [B, 4, 4]}`` centre->source transforms from the pose outputs."""
  return {f: transformation_from_parameters(
      out["axisangle"][f], out["translation"][f], invert=f < 0)
          for f in offsets if f != 0}


def sde_loss(out: dict[str, Any], batch: Batch, offsets: Sequence[int],
             loss_cfg: mlc.ConfigDict, rng: jax.Array, *,
             poses: dict[int, jax.Array] | None = None
             ) -> tuple[jax.Array, dict[str, Any]]:
  """monodepth2 loss of a network output and its sequence batch.

  Args:
    out: network outputs with ``disp`` ``{scale: [B, H_s, W_s, 1]}`` and
      the pose outputs.
    batch: ``color`` ``[B, T, H, W, 3]`` (the *non-augmented* frames, the
      photometric targets), ``pyramid`` ``{"s1".."s3"}`` of the centre
      frame, ``K`` / ``inv_K`` ``[B, 4, 4]``.
    offsets: the sorted frame offsets of ``color``.
    loss_cfg: ``config.loss`` (``scales``, weights, depth range, ...).
    rng: key of the automasking tie-breaking noise.
    poses: centre->source transforms replacing the pose net's (the
      ground-truth oracle); default ``cam_T_cam(out, offsets)``.

  Returns:
    ``(loss, aux)`` of ``losses.monodepth.monodepth_loss`` plus
    ``aux["disps"]`` (float32 disparities per scale).
  """
  disps = {s: out["disp"][s].astype(jnp.float32) for s in loss_cfg.scales}
  pyramid = {s: to_float(batch["pyramid"][f"s{s}"])
             for s in loss_cfg.scales if s > 0}
  poses = cam_T_cam(out, offsets) if poses is None else poses
  loss, aux = monodepth_loss(disps, to_float(batch["color"]), pyramid, poses,
                             batch["K"], batch["inv_K"], rng, loss_cfg)
  return loss, dict(aux, disps=disps)


def labeled_seg_loss(out: dict[str, Any], labels: jax.Array
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Supervised CE of a network output (ignore 250).

  Args:
    out: network outputs with ``semantics`` ``[B, H, W, C]`` and, for PAD,
      ``intermediate_semantics`` ``[B, H/4, W/4, C]`` (upsampled inside
      ``cross_entropy`` with align_corners=True, as the reference).
    labels: ``[B, H, W]`` int train ids.

  Returns:
    ``(loss, metrics)``: the CE of the final logits, or the mean of the final
    and intermediate CE (the reference averages PAD's two heads); metrics
    ``ce`` / ``ce_intermediate``.
  """
  ce = cross_entropy(out["semantics"], labels, IGNORE_INDEX)
  metrics = {"ce": ce}
  if "intermediate_semantics" in out:
    ce_i = cross_entropy(out["intermediate_semantics"], labels, IGNORE_INDEX)
    metrics["ce_intermediate"] = ce_i
    return 0.5 * (ce + ce_i), metrics
  return ce, metrics


def scalar_metrics(aux: dict[str, Any]) -> dict[str, jax.Array]:
  """The scalar entries of a loss aux dict (what the engine logs)."""
  return {k: v for k, v in aux.items()
          if isinstance(v, jax.Array) and v.ndim == 0}


# -- initial weights --------------------------------------------------------


class CopyRule(NamedTuple):
  """Copy ``<src>/<rest>`` of an earlier run to ``<dst>/<rest>``.

  ``src``/``dst`` are path prefixes ("" = the root); ``exclude`` drops
  paths whose ``rest`` matches it; ``include`` (a ``config.init.patterns``
  entry) keeps only paths whose ``rest`` matches it.
  """
  src: str
  dst: str
  exclude: str | None = None
  include: str | None = None

  def target(self, path: str) -> str | None:
    """The destination path of source ``path``, or None when not copied."""
    if self.src:
      if not path.startswith(self.src + "/"):
        return None
      rest = path[len(self.src) + 1:]
    else:
      rest = path
    if self.exclude and re.fullmatch(self.exclude, rest):
      return None
    if self.include and not re.fullmatch(self.include, rest):
      return None
    return f"{self.dst}/{rest}" if self.dst else rest

  def nothing_copied(self, what: str) -> str:
    if self.include is not None and not self.src:
      return (f"config.init.patterns: {self.include!r} matches no variable "
              f"of {what}")
    return (f"config.init: {what} has no variables under {self.src!r} "
            f"(needed for {self.dst!r})")


def sde_init_mapping(seg_head: str, *, depth: bool, pose: bool,
                     parts=("encoder", "decoders", "pose")
                     ) -> list[CopyRule]:
  """Rules copying an SDE run's nets into a segmentation net.

  SDE checkpoints (``SDENet``) have ``encoder``, ``depth`` (with
  ``dispconv_*``) and ``pose``. Targets: PAD -> both ``pad/depth_dec`` and
  ``pad/seg_dec`` (the latter without ``dispconv``, which the reference
  replaces by Identity after loading); transfer -> the head's own
  ``seg_head/unet_dec`` (without ``dispconv``) and ``depth`` when the net
  has a depth decoder.

  Args:
    seg_head: ``pad``, ``transfer`` or ``transfer_student``.
    depth: the segmentation net has a (transfer-mode) depth decoder.
    pose: the segmentation net has a pose net.
    parts: subset of ``("encoder", "decoders", "pose")`` to copy.

  Returns:
    The rules (``CopyRule(src, dst, exclude)``).
  """
  unknown = set(parts) - {"encoder", "decoders", "pose"}
  if unknown:
    raise ValueError(f"config.init.parts: unknown {sorted(unknown)}; choose "
                     "from encoder, decoders, pose")
  m = []
  if "encoder" in parts:
    m.append(CopyRule("encoder", "encoder"))
  if "decoders" in parts:
    if seg_head == "pad":
      m.append(CopyRule("depth", "pad/depth_dec"))
      m.append(CopyRule("depth", "pad/seg_dec", r"dispconv_\d+/.*"))
    else:
      m.append(CopyRule("depth", "seg_head/unet_dec", r"dispconv_\d+/.*"))
      if depth:
        m.append(CopyRule("depth", "depth"))
  if "pose" in parts and pose:
    m.append(CopyRule("pose", "pose"))
  return m


def copy_variables(variables: dict[str, Any], source: dict[str, Any],
                   rules: Sequence[CopyRule], what: str) -> dict[str, Any]:
  """Copies ``source`` variables into ``variables`` along ``rules``.

  Args:
    variables: ``{"params", "batch_stats"}`` numpy trees of the new net.
    source: the same collections of the earlier run.
    rules: ``CopyRule``s (or ``(src, dst, exclude)`` triples).
    what: name of the source for error messages.

  Returns:
    The updated trees.

  Raises:
    ValueError: a target is missing or a shape differs, or a rule copies
      nothing.
  """
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  counts = {}
  for rule in rules:
    rule = CopyRule(*rule)
    n = 0
    for col in ("params", "batch_stats"):
      tree = source.get(col) or {}
      for path, value in flax.traverse_util.flatten_dict(
          tree, sep="/").items():
        dst = rule.target(path)
        if dst is None:
          continue
        key = f"{col}/{dst}"
        if key not in flat or np.shape(flat[key]) != np.shape(value):
          raise ValueError(
              f"config.init: {col}/{path} of {what} {np.shape(value)} does "
              f"not fit {key} "
              f"({np.shape(flat[key]) if key in flat else 'absent'}); the "
              "earlier run must use the same encoder depth/width and decoder")
        flat[key] = np.asarray(value, np.asarray(flat[key]).dtype)
        n += 1
    if not n:
      raise ValueError(rule.nothing_copied(what))
    counts[rule.include or f"{rule.src}->{rule.dst}"] = n
  logging.info("init from %s: %s", what, counts)
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def init_rules(init_cfg: mlc.ConfigDict, model_cfg: mlc.ConfigDict
               ) -> list[CopyRule]:
  """The copy rules of a ``config.init`` section (module docstring)."""
  rules = [CopyRule("", "", include=p)
           for p in init_cfg.get("patterns", ())]
  parts = tuple(init_cfg.get("parts", ()))
  if parts:
    rules += sde_init_mapping(model_cfg.seg_head, depth=model_cfg.depth,
                              pose=model_cfg.pose, parts=parts)
  return rules


def apply_init(variables: dict[str, Any], init_cfg: mlc.ConfigDict,
               model_cfg: mlc.ConfigDict) -> dict[str, Any]:
  """Copies the variables ``config.init`` names from an earlier run.

  Args:
    variables: ``{"params", "batch_stats"}`` numpy trees of this model.
    init_cfg: ``config.init`` (module docstring).
    model_cfg: ``config.model`` (for ``parts``: ``seg_head``, ``depth``,
      ``pose``).

  Returns:
    The updated variables (unchanged when ``init_cfg.checkpoint`` is "").
  """
  if not init_cfg.checkpoint:
    return variables
  rules = init_rules(init_cfg, model_cfg)
  if not rules:
    raise ValueError(
        f"config.init.checkpoint={init_cfg.checkpoint!r} but neither "
        "config.init.patterns nor config.init.parts names what to copy")
  prev = ckpt_lib.load_variables(
      init_cfg.checkpoint, None if init_cfg.step < 0 else init_cfg.step)
  return copy_variables(variables, prev, rules,
                        f"{init_cfg.checkpoint} step {prev['step']}")


def load_initial_weights(params, batch_stats, config: mlc.ConfigDict
                         ) -> tuple[Any, Any]:
  """Host-side weights of a fresh run; every task's ``load_pretrained``.

  In order: the ImageNet encoder (``config.model.encoder_init``, also into
  the frozen ``imnet_encoder`` copy with ``imnet_encoder``), the pose
  encoder (``pose_encoder_init``, when the net has a pose net), the pose
  net's translation prior (``pose_translation_prior``), then an earlier run
  (``config.init``), which wins over all of them.

  Returns:
    ``(params, batch_stats)`` numpy trees.
  """
  mc = config.model
  variables = {"params": params, "batch_stats": batch_stats}
  if mc.encoder_init:
    enc = pretrained.load_npz(mc.encoder_init)
    variables = pretrained.merge_variables(variables, enc, at=("encoder",))
    if mc.imnet_encoder:
      variables = pretrained.merge_variables(variables, enc,
                                             at=("imnet_encoder",))
  elif mc.imnet_encoder:
    raise ValueError("config.model.imnet_encoder needs "
                     "config.model.encoder_init (the ImageNet weights)")
  if mc.pose_encoder_init and "pose" in params:
    variables = pretrained.merge_variables(
        variables, pretrained.load_npz(mc.pose_encoder_init),
        at=("pose", "encoder"))
  variables = jax.device_get(variables)
  if mc.get("pose_translation_prior"):
    if "pose" not in variables["params"]:
      raise ValueError("config.model.pose_translation_prior needs the "
                       "pose net (config.model.pose=True)")
    p = dict(variables["params"])
    p["pose"] = jax.device_get(pose_lib.with_translation_prior(
        p["pose"], mc.pose_translation_prior))
    variables = dict(variables, params=p)
  variables = apply_init(variables, config.init, mc)
  return variables["params"], variables["batch_stats"]


# -- evaluation -------------------------------------------------------------


models_to_evaluate = state_lib.models_to_evaluate


def eval_batches(stream: mlc.ConfigDict, config: mlc.ConfigDict,
                 data_dir: str, *, limit: int | None = None
                 ) -> Iterator[Batch]:
  """One ordered pass over ``config.eval.split`` of ``stream``.

  Yields per-process host (numpy) batches of ``config.eval.batch_size``
  over all processes; the last one is padded (``index`` -1). At most
  ``limit`` batches (default ``config.eval.num_batches``; 0 = all). The
  loader is closed when the consumer stops early.
  """
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  ec = config.eval
  limit = ec.num_batches if limit is None else limit
  loader = pipeline.make_loader(
      stream, split=ec.split, global_batch_size=ec.batch_size,
      seed=config.seed, train=False, data_dir=data_dir)
  try:
    for i, b in enumerate(loader):
      if limit and i >= limit:
        break
      yield b
  finally:
    loader.close()


def first_eval_batch(stream, config, data_dir: str) -> Batch:
  """The first batch of ``eval_batches`` (image panels)."""
  with contextlib.closing(eval_batches(stream, config, data_dir,
                                       limit=1)) as it:
    return next(it)


# -- entry point ------------------------------------------------------------


def run(config: mlc.ConfigDict, workdir: str, *, task, train_iter,
        example_batch: Any, mesh, eval_fn=None, image_fn=None,
        evaluators: Sequence[Any] = (), close: Sequence[Any] = ()):
  """Trains ``task`` with ``trainer.fit`` and closes the loaders after.

  Args:
    config, workdir: as ``trainer.fit``.
    task: the mode's task.
    train_iter: the training iterator (closed at the end).
    example_batch: shapes of what ``task.init`` reads.
    mesh: the data mesh.
    eval_fn, image_fn, evaluators: passed to ``trainer.fit``.
    close: more things with a ``close()`` (closed at the end).

  Returns:
    The final state (``trainer.fit``); ``state.step`` below
    ``config.train.num_steps`` means the run was preempted.
  """
  try:
    return trainer.fit(config, workdir, task=task, train_iter=train_iter,
                       example_batch=example_batch, mesh=mesh,
                       eval_fn=eval_fn, image_fn=image_fn,
                       evaluators=evaluators)
  finally:
    for it in (train_iter, *close):
      closer = getattr(it, "close", None)
      if closer is not None:
        closer()


PredictFn = Callable[[Any, Batch], dict[str, jax.Array]]
