"""Mode ``demo``: the project end to end on MiniCity, as resumable stages.

Stages, in order; each records completion (``<workdir>/stages/<name>.json``
or its output) and is skipped on a rerun in the same workdir, and the
training stages resume from their last checkpoint when interrupted. A
training stage is done only when its run reached its step count: a
preemption (SIGTERM, at any time during the demo) makes the running stage
save its checkpoint and ends the whole demo (exit code 0); the next run in
the same workdir continues that stage.

1. ``generate``: MiniCity datasets of ``config.minicity`` (``target``:
   cityscapes layout, ``source``: gta5 layout) into ``<workdir>/data/<stream
   name>``.
2. ``prepare``: tfds array_record preparation of every stream of
   ``config.data`` (``<workdir>/tfds``), plus their statistics (counts per
   split, class pixel frequencies, image sizes, intrinsics), printed and
   stored as ``<workdir>/stats_<tfds config>.json``.
3. ``sde_target`` / ``sde_source``: self-supervised depth on each domain
   (``mode=sde`` in ``<workdir>/sde_target``, ``sde_source``); the target
   SDE is evaluated against MiniCity's rendered depth.
4. ``export_target`` / ``export_source``: their pseudo disparities of every
   segmentation image (``<workdir>/pseudo_depth/{target,source}``).
5. ``target_only`` / ``source_target`` / ``ssda``: SSDA runs
   (``mode=ssda`` in ``<workdir>/<stage>``, one stage factory): the two
   baselines (labeled target CE; + source CE) and the method
   (CDM + TDM + MGS + multi-task for the default row, initialised from the
   target SDE), the same data, seed and step count, each evaluated on the
   target val split.
6. ``report``: ``<workdir>/report.md`` with the three runs side by side
   (mIoU, per-class IoU, the method's differences to each baseline), the
   target SDE's depth metrics and error budget, and prediction / DepthMix
   panels.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import logging
import ml_collections as mlc
import numpy as np

from sdeseg_jax.data import prepare as prepare_lib
from sdeseg_jax.data import resolve

_ROLES = ("target", "source")


def data_root(workdir: str, stream) -> str:
  return resolve.generated_root(workdir, stream.name)


def streams_with_paths(config, workdir: str) -> dict[str, Any]:
  """The demo's streams with ``path`` set to their generated folders."""
  return {role: resolve.with_overrides(
      config.data[role], path=data_root(workdir, config.data[role]))
          for role in _ROLES}


def stage_generate(config, workdir: str, log) -> None:
  for role in _ROLES:
    stream = config.data[role]
    out = data_root(workdir, stream)
    if resolve.is_generated(out):
      log(f"[generate] {out} exists, skipped")
      continue
    mc = config.minicity[role]
    if mc.layout != stream.layout:
      raise ValueError(
          f"config.minicity.{role}.layout={mc.layout!r} but "
          f"config.data.{role}.layout={stream.layout!r}")
    log(f"[generate] MiniCity {mc.layout} -> {out}")
    resolve.ensure_minicity(mc, out, log=log)


def stage_prepare(config, workdir: str, log) -> None:
  data_dir = prepare_lib.tfds_dir(config, workdir)
  for role, stream in streams_with_paths(config, workdir).items():
    log(f"[prepare] {role}: {stream.name}")
    prepare_lib.prepare_stream(stream, data_dir, workdir, log=log)


def _stage_file(workdir: str, name: str) -> str:
  return os.path.join(workdir, "stages", name + ".json")


def _done(workdir: str, name: str) -> dict[str, Any] | None:
  path = _stage_file(workdir, name)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _mark(workdir: str, name: str, result: dict[str, Any]) -> None:
  path = _stage_file(workdir, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=1, default=float)
  os.replace(path + ".tmp", path)


def _sub_config(sub, workdir: str, paths: dict[str, str]):
  """An unlocked copy of a stage config with the workdir's paths."""
  c = mlc.ConfigDict(sub.to_dict())
  c.data.tfds_dir = os.path.join(workdir, "tfds")
  for role, path in paths.items():
    c.data[role].path = path
  return c


def _sde_paths(config, workdir: str, role: str) -> dict[str, str]:
  """Both SDE streams of a domain read its generated MiniCity folder."""
  root = data_root(workdir, config.data[role])
  return {"train": root, "val": root}


class Preempted(Exception):
  """A training stage stopped before its step count (SIGTERM)."""


def _skipped(workdir: str, name: str, log) -> bool:
  """True (and says so) when stage ``name`` is already done."""
  if _done(workdir, name) is None:
    return False
  log(f"[{name}] done, skipped")
  return True


def _sde_config(config, workdir: str, role: str):
  """The SDE run of a domain, reading its generated MiniCity folder."""
  return _sub_config(config[f"sde_{role}"], workdir,
                     _sde_paths(config, workdir, role))


def _check_finished(name: str, reached: int, wanted: int) -> None:
  if reached < wanted:
    raise Preempted(f"[{name}] preempted at step {reached} of {wanted}; "
                    "rerun the same command to continue")


def _make_sde_stage(role: str):
  def stage(config, workdir: str, log) -> None:
    import jax  # pylint: disable=g-import-not-at-top
    from sdeseg_jax.train import sde  # pylint: disable=g-import-not-at-top
    name = f"sde_{role}"
    if _skipped(workdir, name, log):
      return
    sub = _sde_config(config, workdir, role)
    log(f"[{name}] {sub.train.num_steps} steps of self-supervised depth on "
        f"the {role} domain -> {os.path.join(workdir, name)}")
    state = sde.run(sub, os.path.join(workdir, name))
    steps = int(jax.device_get(state.step))
    _check_finished(name, steps, sub.train.num_steps)
    _mark(workdir, name, {"steps": steps})
  return stage


def _make_export_stage(role: str):
  def stage(config, workdir: str, log) -> None:
    from sdeseg_jax.train import export  # pylint: disable=g-import-not-at-top
    name = f"export_{role}"
    if _skipped(workdir, name, log):
      return
    sub = _sde_config(config, workdir, role)
    sub.mode = "export_depth"
    sub.export.out_dir = os.path.join(workdir, "pseudo_depth", role)
    index = export.run(sub, os.path.join(workdir, f"sde_{role}"))
    log(f"[{name}] {index['counts']} pseudo disparities -> "
        f"{sub.export.out_dir}")
    _mark(workdir, name, {"counts": index["counts"]})
  return stage


def ssda_config(config, workdir: str, name: str = "ssda"):
  """The config of SSDA stage ``name`` (``config[name]``, a ``configs/
  ssda_minicity.py`` config) with ``data_root`` = the demo workdir."""
  c = mlc.ConfigDict(config[name].to_dict())
  c.data_root = workdir
  c.data.tfds_dir = os.path.join(workdir, "tfds")
  return c


def _make_ssda_stage(name: str):
  """The stage training ``config[name]`` (an SSDA row) in
  ``<workdir>/<name>``, evaluated on the target val split."""
  def stage(config, workdir: str, log) -> None:
    from sdeseg_jax.train import ssda  # pylint: disable=g-import-not-at-top
    if _skipped(workdir, name, log):
      return
    sub = ssda_config(config, workdir, name)
    log(f"[{name}] row {sub.ssda.row}: {sub.train.num_steps} steps -> "
        f"{os.path.join(workdir, name)}")
    result = ssda.run(sub, os.path.join(workdir, name))
    _check_finished(name, result["step"], sub.train.num_steps)
    teacher = (f" (teacher {result['miou_teacher']:.1f})"
               if "miou_teacher" in result else "")
    log(f"[{name}] target val mIoU {result['miou']:.1f}{teacher}")
    _mark(workdir, name, result)
  return stage


# The SSDA stages, in the report's order: the baselines, then the method.
SEG_RUNS = {"target_only": "target only", "source_target": "source + target",
            "ssda": "SSDA {row}"}


def _target_depth(config, workdir: str):
  """The target SDE on the val split (rendered depth): its depth metrics
  and error budget (``eval.depth.DepthAccumulator``)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from sdeseg_jax.train import checkpoint as ckpt_lib
  from sdeseg_jax.train import sde
  from sdeseg_jax.utils import sharding as sharding_lib
  # pylint: enable=g-import-not-at-top
  sub = _sde_config(config, workdir, "target")
  mesh = sharding_lib.make_mesh()
  task = sde.SDETask(sub)
  v = ckpt_lib.load_variables(os.path.join(workdir, "sde_target"))
  variables = jax.device_put(
      {"params": v["params"], "batch_stats": v["batch_stats"]},
      sharding_lib.replicated(mesh))
  (evaluator,) = sde.make_evaluators(task, sub, mesh, sub.data.val,
                                     sub.data.tfds_dir, workdir="")
  return evaluator.accumulate(variables)


def _val_predictions(config, workdir: str, name: str, batch):
  """Train-id predictions ``[B, H, W]`` of the final student of SSDA stage
  ``name`` on a val batch."""
  # pylint: disable=g-import-not-at-top
  import jax
  from sdeseg_jax.train import checkpoint as ckpt_lib
  from sdeseg_jax.train import ssda
  # pylint: enable=g-import-not-at-top
  task = ssda.SSDATask(ssda_config(config, workdir, name))
  v = ckpt_lib.load_variables(os.path.join(workdir, name))
  return np.asarray(jax.jit(
      lambda v, c: jax.numpy.argmax(task.predict(v, {"color": c})["logits"],
                                    -1))(
          {"params": v["params"], "batch_stats": v["batch_stats"]},
          batch["color"]))


def stage_report(config, workdir: str, log) -> None:
  """The method beside its baselines (mIoU, per-class IoU, differences),
  the target SDE's depth metrics and error budget, example images ->
  report.md."""
  # pylint: disable=g-import-not-at-top
  from sdeseg_jax import report
  from sdeseg_jax.eval import depth as depth_eval
  from sdeseg_jax.eval import evaluators as evaluators_lib
  from sdeseg_jax.train import ssda
  from sdeseg_jax.train import toolkit
  # pylint: enable=g-import-not-at-top
  if _done(workdir, "report") is not None:
    log(f"[report] done, see {os.path.join(workdir, 'report.md')}")
    return
  sub = ssda_config(config, workdir)
  names = {key: label.format(row=sub.ssda.row)
           for key, label in SEG_RUNS.items()}
  seg = {names[key]: evaluators_lib.read_latest(os.path.join(workdir, key),
                                                ssda.EVALUATOR)
         for key in SEG_RUNS}
  acc = _target_depth(config, workdir)
  depth = {"target SDE": acc.result()}
  budget = depth_eval.format_breakdown(
      acc.breakdown.result(),
      "Target SDE: error budget (median-scaled, pooled over pixels)")
  img_dir = os.path.join(workdir, "report_images")
  images = {}
  # Predictions of each run's final student on target val images.
  task = ssda.SSDATask(sub)
  streams = ssda.resolve_streams(sub)
  n = config.report.num_images
  ev = mlc.ConfigDict(sub.to_dict())
  ev.eval.update(split="val", batch_size=n)
  b = toolkit.first_eval_batch(streams["val"], ev, sub.data.tfds_dir)
  preds = [_val_predictions(config, workdir, key, b) for key in SEG_RUNS]
  color = b["color"][:, task.centre["val"]]

  def scale(tile):
    """Integer upscaling of a ``[H, W, 3]`` tile to >= tile_width px."""
    return -(-config.report.tile_width // tile.shape[-2])

  caption = ("Predictions (image | " + " | ".join(names.values()) +
             " | ground truth)")
  images[caption] = report.save_png(
      os.path.join(img_dir, "predictions.png"),
      report.prediction_panels(color, preds, b["label"], n),
      scale=scale(color[0]))
  # DepthMix examples from one training batch.
  if "source" in streams and "unlabeled" in streams:
    mix_stream = ssda.make_train_stream(sub, streams, sub.data.tfds_dir)
    ex = ssda.mix_examples(task, next(mix_stream))
    mix_stream.close()
    images["DepthMix (target | MGS source | CDM | mask | TDM | mask)"] = (
        report.save_png(os.path.join(img_dir, "depthmix.png"),
                        report.mix_panels(
                            ex["target"], ex["source"], ex["cdm"],
                            ex["cdm_mask"], ex["tdm"], ex["tdm_mask"], n),
                        scale=scale(ex["target"][0])))
  notes = [f"Every SSDA run: {sub.train.num_steps} steps, "
           f"{sub.data.target.subset.n} labeled target images (the same "
           f"subset), seed {sub.seed}, batch {sub.ssda.batch_target} target "
           f"+ {sub.ssda.batch_source} source (+ {sub.ssda.batch_unlabeled} "
           "unlabeled target for the mixes); one evaluation at the end",
           f"SSDA row {sub.ssda.row}: depth scale {sub.ssda.depth_scale}, "
           "initialised from the target SDE; the baselines from scratch",
           f"SDE: {config.sde_target.train.num_steps} steps per domain"]
  baselines = [names[k] for k in SEG_RUNS if k != "ssda"]
  text = report.write_report(
      workdir, title="sdeseg_jax demo: SSDA on MiniCity", seg=seg,
      baselines=baselines, depth=depth, depth_budget=budget, images=images,
      notes=notes)
  log(text)
  _mark(workdir, "report", {
      "miou": {name: rec["miou"] for name, rec in seg.items()},
      "abs_rel": depth["target SDE"].get("abs_rel")})


STAGES: tuple[tuple[str, Callable[..., None]], ...] = (
    ("generate", stage_generate),
    ("prepare", stage_prepare),
    ("sde_target", _make_sde_stage("target")),
    ("sde_source", _make_sde_stage("source")),
    ("export_target", _make_export_stage("target")),
    ("export_source", _make_export_stage("source")),
    *((name, _make_ssda_stage(name)) for name in SEG_RUNS),
    ("report", stage_report),
)


def _use_compilation_cache(workdir: str, log) -> None:
  """XLA's persistent cache in ``<workdir>/compile_cache``, unless one is
  set (``JAX_COMPILATION_CACHE_DIR``, e.g. the tests').

  Stages compile the same programs: both SDE stages the same step, the
  two baselines the same initialisation and evaluation, the report what the
  stages' evaluations compiled; a rerun (a resumed stage) everything. With
  the cache each is compiled once.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir:
    return
  path = os.path.join(workdir, "compile_cache")
  jax.config.update("jax_compilation_cache_dir", path)
  log(f"[demo] XLA compilation cache: {path}")


def run(config, workdir: str, log=print, stages: tuple[str, ...] = ()
        ) -> bool:
  """Runs every stage of the demo in ``workdir`` (resumable).

  Args:
    config: ``configs/demo.py`` config.
    workdir: output folder.
    log: progress printer.
    stages: run only these stage names (default all, in order).

  Returns:
    True when every chosen stage is done; False when the demo was
    preempted (SIGTERM): the running stage saved its checkpoint and the
    next run in ``workdir`` continues it.
  """
  os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
  names = [n for n, _ in STAGES]
  unknown = set(stages) - set(names)
  if unknown:
    raise ValueError(f"unknown demo stages {sorted(unknown)}; known {names}")
  from sdeseg_jax.train import trainer  # pylint: disable=g-import-not-at-top
  _use_compilation_cache(workdir, log)
  t0 = time.time()
  chosen = [(n, f) for n, f in STAGES if not stages or n in stages]
  # SIGTERM at any point (also between stages, or while a stage prepares
  # its data) asks the running or the next training run to save and stop.
  with trainer.PreemptionGuard() as guard:
    for i, (name, fn) in enumerate(chosen):
      logging.info("demo stage %s", name)
      log(f">> stage {i + 1}/{len(chosen)}: {name} "
          f"({time.time() - t0:.0f} s elapsed)")
      w0, c0 = time.time(), time.process_time()
      try:
        fn(config, workdir, log)
      except Preempted as e:
        log(f">> {e}")
        return False
      # Process CPU time: all threads (XLA's, the data loaders').
      log(f">> stage {name}: {time.time() - w0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU")
      if guard.requested:
        log(f">> preempted after stage {name}; rerun the same command to "
            "continue")
        return False
  log(f">> demo finished in {time.time() - t0:.0f} s; report: "
      f"{os.path.join(workdir, 'report.md')}")
  return True
