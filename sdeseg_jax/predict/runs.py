"""A training run as seen from outside: its config, steps and variables.

A *run* is the ``--workdir`` of a training mode (``sde``, ``ssl``, ``ssda``,
the demo's ``ssda/`` …). Its ``checkpoints/<step>/`` folders hold the train
state and the config it was trained with (``train/checkpoint.py``), so the
network can be rebuilt without the original config file.

Steps: ``"latest"``, ``"best"`` (the kept checkpoint whose evaluation record
has the highest mIoU of the chosen model, ``records.best_step``) or a
number. Models: ``"student"`` (``params``/``batch_stats``) or ``"teacher"``
(the EMA teacher: ``ema_params``/``ema_batch_stats``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax import errors
from sdeseg_jax.models import joint
from sdeseg_jax.predict import records
from sdeseg_jax.train import checkpoint as ckpt_lib

MODELS = ("student", "teacher")


def workdir_of(path: str, key: str = "config.predict.run") -> str:
  """The run folder of ``path`` (a workdir or its ``checkpoints`` folder).

  Raises:
    errors.CheckpointError: no finished checkpoint there, naming ``key``.
  """
  path = os.path.abspath(os.path.expanduser(path or ""))
  if os.path.basename(path) == "checkpoints":
    path = os.path.dirname(path)
  if not checkpoint_steps(path):
    raise errors.CheckpointError(
        f"{key}={path!r} holds no finished checkpoint (expected "
        f"{ckpt_lib.checkpoint_dir(path)}/<step>/): give the --workdir of a "
        "training run (mode=sde, ssl or ssda; the demo's <workdir>/ssda)")
  return path


def checkpoint_steps(workdir: str) -> list[int]:
  """Sorted steps of the finished checkpoints of ``workdir`` ([] if none)."""
  directory = ckpt_lib.checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit() and
                os.path.isdir(os.path.join(directory, d, "state")))


def resolve_step(workdir: str, step: str | int, model: str = "student",
                 key: str = "config.predict.step") -> int:
  """``"latest"`` / ``"best"`` / a number -> a kept checkpoint step.

  Raises:
    errors.ConfigError: unknown spelling, no evaluation records for ``best``, or the
      step's checkpoint was not kept.
  """
  steps = checkpoint_steps(workdir)
  spec = str(step).strip().lower()
  if spec in ("latest", "last", "final", "-1", ""):
    return steps[-1]
  if spec == "best":
    best = records.best_step(workdir, model)
    if best is None:
      raise errors.ConfigError(
          f"{key}='best': {workdir} has no evaluation records of the "
          f"{model} (eval/<evaluator>/step_<N>.json); give a step number "
          "or 'latest'")
    if best not in steps:
      raise errors.ConfigError(
          f"{key}='best': the best {model} step {best} of {workdir} has no "
          f"kept checkpoint (kept: {steps}; raise config.train.max_to_keep "
          "when training) -- give one of the kept steps")
    return best
  if not spec.isdigit():
    raise errors.ConfigError(
        f"{key}={step!r}: use 'latest', 'best' or a step number")
  if int(spec) not in steps:
    raise errors.ConfigError(
        f"{key}={step!r}: {workdir} has checkpoints {steps}")
  return int(spec)


def load_config(workdir: str, step: int) -> mlc.ConfigDict:
  """The config saved with checkpoint ``step`` (JSON: tuples are lists)."""
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    return mlc.ConfigDict(ckpt.restore_config(step))
  finally:
    ckpt.close()


def load_state_tree(workdir: str, step: int) -> dict[str, Any]:
  """The whole saved train state of ``step`` as numpy (EMA teacher
  included, unlike ``checkpoint.load_variables``)."""
  return ckpt_lib.load_state_tree(
      os.path.join(ckpt_lib.checkpoint_dir(workdir), str(step), "state"))


def pick_variables(state: dict[str, Any], model: str, workdir: str
                   ) -> dict[str, Any]:
  """``{"params", "batch_stats"}`` of the student or the EMA teacher."""
  if model not in MODELS:
    raise errors.ConfigError(f"model={model!r}; choose one of {MODELS}")
  if model == "student":
    return {"params": state["params"],
            "batch_stats": state.get("batch_stats") or {}}
  if not state.get("ema_params"):
    raise errors.ConfigError(
        f"{workdir} has no EMA teacher (trained with config.train.use_ema="
        "False): use model=student")
  return {"params": state["ema_params"],
          "batch_stats": state.get("ema_batch_stats") or {}}


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in flat}


def check_architecture(model: nn.Module, variables: dict[str, Any],
                       where: str) -> None:
  """Fails at once if ``variables`` do not fit ``model``.

  Args:
    model: the network built from a config.
    variables: loaded ``{"params", "batch_stats"}``.
    where: names the checkpoint and the config in the message.

  Raises:
    errors.CheckpointError: naming the first missing, unexpected or reshaped parameter.
  """
  x = jax.ShapeDtypeStruct((1, 1, 64, 64, 3), jnp.float32)
  init = jax.eval_shape(
      lambda: model.init({"params": jax.random.PRNGKey(0),
                          "dropout": jax.random.PRNGKey(0)},
                         jnp.zeros(x.shape, x.dtype), (0,), train=False))
  want = _flat_shapes({"params": init["params"],
                       "batch_stats": init.get("batch_stats", {})})
  have = _flat_shapes({"params": variables["params"],
                       "batch_stats": variables.get("batch_stats", {})})
  # The pose net and the frozen ImageNet copy are not built for one frame.
  skip = ("['pose']", "['imnet_encoder']")
  have = {k: v for k, v in have.items() if not any(s in k for s in skip)}
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want))
  reshaped = sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if missing or extra or reshaped:
    what = []
    if missing:
      what.append(f"{len(missing)} parameters missing, e.g. {missing[0]}")
    if extra:
      what.append(f"{len(extra)} unexpected, e.g. {extra[0]}")
    if reshaped:
      k = reshaped[0]
      what.append(f"{len(reshaped)} of another shape, e.g. {k}: checkpoint "
                  f"{have[k]} vs model {want[k]}")
    raise errors.CheckpointError(
        f"{where}: the checkpoint is of another architecture than its "
        f"config.model describes ({'; '.join(what)}). Point at the workdir "
        "that trained it, or give config.model_config.")


@dataclasses.dataclass
class LoadedRun:
  """A run's model at one step, ready for ``model.apply(variables, ...)``."""
  workdir: str
  step: int
  model_name: str
  config: mlc.ConfigDict
  model: nn.Module
  variables: dict[str, Any]

  @property
  def has_segmentation(self) -> bool:
    return self.config.model.seg_head != "none"

  @property
  def has_depth(self) -> bool:
    mc = self.config.model
    return mc.seg_head in ("none", "pad") or bool(mc.depth)

  def describe(self) -> dict[str, Any]:
    return {"run": self.workdir, "step": self.step,
            "model": self.model_name, "mode": self.config.get("mode", ""),
            "seg_head": self.config.model.seg_head,
            "num_classes": int(self.config.model.num_classes)}


def load(path: str, step: str | int = "latest", model: str = "student",
         model_config: mlc.ConfigDict | None = None,
         key: str = "config.predict") -> LoadedRun:
  """Loads a run's student or teacher at a step, checking the architecture.

  Args:
    path: the run's workdir (or its checkpoints folder).
    step: ``"latest"``, ``"best"`` or a step number.
    model: ``"student"`` or ``"teacher"``.
    model_config: a ``config.model`` to use instead of the saved one.
    key: config prefix named in errors.

  Returns:
    The loaded run.
  """
  if model not in MODELS:
    raise errors.ConfigError(
        f"{key}.model={model!r}; choose one of {MODELS}")
  workdir = workdir_of(path, f"{key}.run")
  s = resolve_step(workdir, step, model, f"{key}.step")
  config = load_config(workdir, s)
  if model_config is not None:
    config.model = mlc.ConfigDict(model_config.to_dict())
  net = joint.from_config(config.model)
  variables = pick_variables(load_state_tree(workdir, s), model, workdir)
  check_architecture(net, variables, f"checkpoint {s} of {workdir}")
  return LoadedRun(workdir, s, model, config, net, variables)
