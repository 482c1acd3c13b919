r"""Mode ``evaluate``: any checkpoint of a training run, without training.

  python -m sdeseg_jax.main --workdir=OUT \
      --config=configs/evaluate.py:run=/runs/ssl_cs,step=best,protocol=both

Rebuilds the run's task from the config saved with the checkpoint, restores
the student and the EMA teacher of each chosen step and runs the *same*
evaluator as training does, so it writes the same files into ``--workdir``
(never into the run) and gives the same mIoU as the in-training evaluation
of that step:

* ``ssl`` runs: per-class IoU tables ``iou_tables/<protocol>_iou_step<N>.md``
  (+ ``_final`` / ``_best_<model>``) for each protocol of
  ``config.eval.protocols`` (``paper``: 1024x512; ``full``: full-resolution
  labels, the image resized to the network input);
* ``ssda`` runs: ``eval/step_<N>.json`` (student and teacher mIoU,
  per-class IoU, the Synthia 16/13-class mIoUs and the relative-to-fully-
  supervised figure of ``config.eval``), ``eval/latest.json`` and
  ``eval/table_step_<N>.md``;
* ``sde`` runs: the depth and pose metrics.

Every mode also writes ``evaluate/step_<N>.json`` with the scalars returned
and the checkpoint they came from. Steps: ``latest``, ``best``, ``all`` (every
kept checkpoint, in order) or numbers separated by ``/``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc

from sdeseg_jax.predict import runs
from sdeseg_jax.train.state import TrainState
from sdeseg_jax.utils import sharding as sharding_lib

PROTOCOLS = {"paper": ("paper",), "full": ("full",), "both": ("paper", "full"),
             "": None}


def steps_to_evaluate(workdir: str, spec: str, model: str) -> list[int]:
  """``latest`` / ``best`` / ``all`` / ``N[/M...]`` -> kept steps."""
  spec = str(spec).strip().lower()
  if spec == "all":
    return runs.checkpoint_steps(workdir)
  return sorted({runs.resolve_step(workdir, s, model,
                                   "config.evaluate.step")
                 for s in spec.split("/")})


def state_of(workdir: str, step: int, mesh) -> TrainState:
  """A ``TrainState`` with the step's student and teacher (no optimiser),
  replicated on ``mesh``: what the evaluators read."""
  tree = runs.load_state_tree(workdir, step)
  student = runs.pick_variables(tree, "student", workdir)
  teacher = (runs.pick_variables(tree, "teacher", workdir)
             if tree.get("ema_params") else None)
  state = TrainState(
      step=jnp.asarray(step, jnp.int32), params=student["params"],
      batch_stats=student["batch_stats"], opt_state=None, rng=None, tx=None,
      ema_params=teacher["params"] if teacher else None,
      ema_batch_stats=teacher["batch_stats"] if teacher else None)
  return sharding_lib.replicate(state, mesh)


def with_overrides(config: mlc.ConfigDict, ec: mlc.ConfigDict
                   ) -> mlc.ConfigDict:
  """The saved config with ``config.evaluate``'s split, protocols, batch
  count and data paths applied."""
  config = mlc.ConfigDict(config.to_dict())
  if ec.split:
    config.eval.split = ec.split
  if ec.num_batches >= 0:
    config.eval.num_batches = int(ec.num_batches)
  if ec.batch_size:
    config.eval.batch_size = int(ec.batch_size)
  if ec.protocol not in PROTOCOLS:
    raise ValueError(f"config.evaluate.protocol={ec.protocol!r}; choose one "
                     f"of {sorted(k for k in PROTOCOLS if k)}")
  protos = PROTOCOLS[ec.protocol]
  if protos is not None:
    if config.mode != "ssl":
      raise ValueError(
          f"config.evaluate.protocol={ec.protocol!r}: only mode=ssl runs "
          f"evaluate several protocols (this run is mode={config.mode}); "
          "leave it empty")
    config.eval.protocols = protos
  if ec.data_root and "data_root" in config:
    config.data_root = ec.data_root
  if ec.path:
    for name in ("val", "val_full"):
      if name in config.data:
        config.data[name].path = ec.path
  if ec.tfds_dir:
    config.data.tfds_dir = ec.tfds_dir
  return config


def _ssl(config, run_dir, out_dir, mesh) -> Callable[[TrainState], dict]:
  from sdeseg_jax.train import ssl  # pylint: disable=g-import-not-at-top
  task = ssl.SSLTask(config)
  path = ssl.dataset_path(config, run_dir)
  data_dir = config.data.tfds_dir or os.path.join(run_dir, "tfds")
  eval_fn, _ = ssl.make_eval_fns(task, config, mesh, path, data_dir, out_dir)
  return eval_fn


def _ssda(config, run_dir, out_dir, mesh) -> Callable[[TrainState], dict]:
  from sdeseg_jax.train import ssda  # pylint: disable=g-import-not-at-top
  task = ssda.SSDATask(config)
  val = mlc.ConfigDict(config.data.val.to_dict())
  if not val.path:
    val.path = os.path.join(config.data_root, config.folders.val)
  ssda.check_folder(val, "val")
  data_dir = config.data.tfds_dir or os.path.join(run_dir, "tfds")
  return ssda.Evaluator(task, config, mesh, val, data_dir, out_dir).run


def _sde(config, run_dir, out_dir, mesh) -> Callable[[TrainState], dict]:
  del out_dir
  from sdeseg_jax.train import sde  # pylint: disable=g-import-not-at-top
  task = sde.SDETask(config)
  path = sde.ensure_minicity(config, run_dir)
  val = sde.stream_with_path(config.data.val, config.data.val.path or path)
  data_dir = config.data.tfds_dir or os.path.join(run_dir, "tfds")
  eval_fn, _ = sde.make_eval_fns(task, config, mesh, val, data_dir)
  return eval_fn


EVALUATORS = {"ssl": _ssl, "ssda": _ssda, "sde": _sde}


def evaluate(config: mlc.ConfigDict, workdir: str) -> dict[int, dict]:
  """Evaluates the chosen steps; returns ``{step: scalars}``."""
  ec = config.evaluate
  run_dir = runs.workdir_of(ec.run, "config.evaluate.run")
  if os.path.abspath(workdir) == run_dir:
    raise ValueError(
        "--workdir is the run itself: mode=evaluate writes its files "
        "elsewhere so that the run's own evaluation files are kept; give "
        "another --workdir")
  steps = steps_to_evaluate(run_dir, ec.step, ec.model)
  saved = runs.load_config(run_dir, steps[-1])
  mode = saved.get("mode", "")
  if mode not in EVALUATORS:
    raise ValueError(f"{run_dir} was trained with mode={mode!r}; "
                     f"mode=evaluate knows {sorted(EVALUATORS)}")
  cfg = with_overrides(saved, ec)
  if not cfg.eval.split:
    raise ValueError(f"{run_dir}: its config.eval.split is empty; set "
                     "config.evaluate.split (e.g. val)")
  mesh = sharding_lib.make_mesh()
  eval_fn = EVALUATORS[mode](cfg, run_dir, workdir, mesh)
  results = {}
  for step in steps:
    res = {k: float(v) for k, v in eval_fn(state_of(run_dir, step, mesh)
                                           ).items()}
    results[step] = res
    logging.info("evaluate %s step %d: %s", run_dir, step,
                 {k: round(v, 4) for k, v in res.items() if "iou/" not in k})
    if jax.process_index() == 0:
      out = os.path.join(workdir, "evaluate")
      os.makedirs(out, exist_ok=True)
      with open(os.path.join(out, f"step_{step}.json"), "w") as f:
        json.dump({"run": run_dir, "step": step, "mode": mode,
                   "split": cfg.eval.split, "scalars": res}, f, indent=1)
  return results


def run(config: mlc.ConfigDict, workdir: str) -> dict[int, dict[str, Any]]:
  """Entry point of ``mode=evaluate``."""
  return evaluate(config, workdir)
