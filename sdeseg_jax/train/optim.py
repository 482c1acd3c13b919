"""Optimisers with per-submodule learning-rate groups, freezing and schedules.

``config.optim`` (built by ``configs.common.optim_config``) describes:

* ``name``: ``"sgd"`` (torch SGD: momentum, dampening 0, no Nesterov, weight
  decay coupled into the gradient) or ``"adam"`` (torch Adam; a non-zero
  ``weight_decay`` is coupled L2 as in torch, not AdamW).
* ``lr``: learning rate of every parameter no group claims.
* ``groups``: a sequence of ``(regex, lr)`` pairs. A parameter belongs to the
  first group whose regex ``re.fullmatch``-es its ``/``-joined path (e.g.
  ``"encoder/layer1_0/conv1/kernel"``); ``lr`` is a float or ``"frozen"``.
  Frozen parameters get zero updates (``optax.set_to_zero``), are left out of
  the gradient-norm clipping (torch clips only parameters that have a
  gradient) and are never decayed. This is the reference's
  ``get_train_params`` (``backbone_lr``, ``pose_lr``, ...) plus
  ``freeze_backbone``.
* ``schedule``: the shape shared by all groups, applied per iteration with
  torch ``scheduler.step()``-after-``optimizer.step()`` semantics: the k-th
  update (0-based count k) uses ``lr * factor(k)``.
    - ``constant``: 1.
    - ``step`` (torch StepLR): ``gamma ** (k // step_size)``.
    - ``multistep`` (torch MultiStepLR): ``gamma ** n``, n = the number of
      milestones m with ``k >= m``.
    - ``poly``: ``(1 - min(k, decay_steps) / decay_steps) ** poly_power``,
      at least ``poly_floor`` when the config has that key.
* ``clip_norm``: global L2 norm clipping of the trainable gradients
  (``<= 0`` disables it).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

FROZEN = "frozen"
_BASE = "base"


def param_path(key_path) -> str:
  """``/``-joined name of a pytree key path (dict keys, attrs or indices)."""
  parts = []
  for k in key_path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _group_label(i: int, value) -> str:
  return FROZEN if value == FROZEN else f"group{i}"


def param_labels(groups, params) -> Any:
  """Labels every parameter with its group (first matching regex wins).

  Args:
    groups: sequence of ``(regex, lr_or_"frozen")``.
    params: parameter pytree (arrays or ShapeDtypeStructs).

  Returns:
    A pytree like ``params`` of strings: ``"groupI"``, ``"frozen"`` or
    ``"base"``.

  Raises:
    ValueError: a rule is malformed or matches no parameter (a typo in a
      regex would otherwise silently train the wrong parameters).
  """
  compiled = []
  for i, rule in enumerate(groups):
    if len(rule) != 2:
      raise ValueError(
          f"config.optim.groups[{i}]={rule!r}: expected (regex, lr) with lr a "
          f"float or {FROZEN!r}")
    regex, value = rule
    if not (value == FROZEN or isinstance(value, (int, float))):
      raise ValueError(
          f"config.optim.groups[{i}]: lr {value!r} must be a number or "
          f"{FROZEN!r}")
    compiled.append((re.compile(regex), _group_label(i, value)))
  used = [False] * len(compiled)

  def label(key_path, _):
    path = param_path(key_path)
    for i, (rx, lab) in enumerate(compiled):
      if rx.fullmatch(path):
        used[i] = True
        return lab
    return _BASE

  labels = jax.tree_util.tree_map_with_path(label, params)
  for i, u in enumerate(used):
    if not u:
      paths = [param_path(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(params)[0]]
      raise ValueError(
          f"config.optim.groups[{i}] regex {groups[i][0]!r} matches no "
          f"parameter (it must match the whole '/'-joined path); some paths: "
          f"{paths[:5]}")
  return labels


def lr_factor_fn(cfg: mlc.ConfigDict) -> Callable[[Any], Any]:
  """Returns ``factor(count)``, the schedule shape (1 at count 0)."""
  name = cfg.schedule
  if name == "constant":
    return lambda count: jnp.ones((), jnp.float32)
  if name == "step":
    if cfg.step_size <= 0:
      raise ValueError(f"config.optim.step_size={cfg.step_size} must be > 0")
    return lambda count: jnp.float32(cfg.gamma) ** (
        jnp.asarray(count) // cfg.step_size).astype(jnp.float32)
  if name == "multistep":
    milestones = tuple(int(m) for m in cfg.milestones)
    def multistep(count):
      n = sum(jnp.asarray(count >= m, jnp.float32) for m in milestones)
      return jnp.float32(cfg.gamma) ** jnp.asarray(n, jnp.float32)
    return multistep
  if name == "poly":
    if cfg.decay_steps <= 0:
      raise ValueError(
          f"config.optim.decay_steps={cfg.decay_steps} must be > 0 for poly")
    def poly(count):
      frac = jnp.minimum(jnp.asarray(count, jnp.float32), cfg.decay_steps)
      # poly_floor: the reference's LambdaLR max(floor, (1 - k/K)^p).
      return jnp.maximum((1.0 - frac / cfg.decay_steps) ** cfg.poly_power,
                         cfg.get("poly_floor", 0.0))
    return poly
  raise ValueError(
      f"config.optim.schedule={name!r}; choose constant, step, multistep or "
      f"poly")


def group_lrs(cfg: mlc.ConfigDict) -> dict[str, float]:
  """Peak learning rate of every non-frozen group label."""
  lrs = {_BASE: float(cfg.lr)}
  for i, (_, value) in enumerate(cfg.groups):
    if value != FROZEN:
      lrs[_group_label(i, value)] = float(value)
  return lrs


def learning_rates(cfg: mlc.ConfigDict, count: int) -> dict[str, float]:
  """Host-side learning rate of every group at update ``count`` (logging)."""
  f = float(lr_factor_fn(cfg)(count))
  return {k: v * f for k, v in group_lrs(cfg).items()}


def _base_optimizer(cfg, schedule) -> optax.GradientTransformation:
  parts = []
  if cfg.weight_decay:
    # torch couples weight decay into the gradient before momentum/Adam.
    parts.append(optax.add_decayed_weights(cfg.weight_decay))
  if cfg.name == "sgd":
    parts.append(optax.sgd(schedule, momentum=cfg.momentum or None))
  elif cfg.name == "adam":
    parts.append(optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  else:
    raise ValueError(f"config.optim.name={cfg.name!r}; choose sgd or adam")
  return optax.chain(*parts)


def make_optimizer(cfg: mlc.ConfigDict) -> optax.GradientTransformation:
  """Builds the optax transformation described by ``config.optim``.

  The group labels are computed from the parameter tree given to ``init``,
  so the same transformation works for any model.

  Args:
    cfg: ``config.optim``.

  Returns:
    The gradient transformation.
  """
  factor = lr_factor_fn(cfg)
  groups = tuple(tuple(g) for g in cfg.groups)
  transforms = {FROZEN: optax.set_to_zero()}
  for label, lr in group_lrs(cfg).items():
    transforms[label] = _base_optimizer(
        cfg, lambda count, lr=lr: lr * factor(count))
  labels_fn = lambda params: param_labels(groups, params)
  parts = []
  if cfg.clip_norm and cfg.clip_norm > 0:
    trainable = lambda params: jax.tree.map(
        lambda l: l != FROZEN, labels_fn(params))
    parts.append(optax.masked(optax.clip_by_global_norm(cfg.clip_norm),
                              trainable))
  parts.append(optax.partition(transforms, labels_fn))
  return optax.chain(*parts)
