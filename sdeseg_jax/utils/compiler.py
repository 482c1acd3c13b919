"""XLA compiler defaults of the project, set before JAX starts a backend.

XLA:CPU in jaxlib 0.10 hands convolutions (and the elementwise ops around
them) to YNNPACK fusions by default. For this project's networks XLA's own
convolution emitter is faster on the SDE and SSL training steps (figures in
docs/benchmarks.md, "Speed on CPU"), so the project turns the fusions off
by appending

  --xla_cpu_experimental_ynn_fusion_type=

(an empty list of fusion kinds) to ``XLA_FLAGS``. The flag only concerns
XLA:CPU; GPU and TPU compiles ignore it.

* A user's own ``--xla_cpu_experimental_ynn_fusion_type=...`` in
  ``XLA_FLAGS`` wins; the project adds nothing then.
* ``SDESEG_CPU_YNN=1`` keeps XLA's default (YNNPACK fusions on).

XLA reads ``XLA_FLAGS`` once, when the first backend is created (the first
``jax.devices()``, array or compile), not at ``import jax``; importing
``sdeseg_jax`` calls :func:`apply_defaults`, so ``python -m
sdeseg_jax.main``, the benchmarks and the tests get the default as long as
nothing touched a device before. :func:`apply_defaults` warns when a backend
already exists (the flag would then have no effect).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Mapping, MutableMapping

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# Empty value: no YNNPACK fusion kinds, i.e. XLA's own CPU emitters.
CPU_DEFAULT_FLAGS = (f"{YNN_FLAG}=",)
OPT_OUT_ENV = "SDESEG_CPU_YNN"


def _flag_name(token: str) -> str:
  return token.split("=", 1)[0]


def merged_xla_flags(existing: str | None, defaults=CPU_DEFAULT_FLAGS) -> str:
  """``existing`` XLA_FLAGS with each default flag appended unless set.

  Pure string logic (no jax). A default whose flag name already occurs in
  ``existing`` (with any value, e.g. the user's own
  ``--xla_cpu_experimental_ynn_fusion_type=dot``) is not added, so calling
  this twice adds nothing the second time.

  Args:
    existing: the current ``XLA_FLAGS`` value (None or "" when unset).
    defaults: ``--name=value`` flags to add.

  Returns:
    The new ``XLA_FLAGS`` value, space-separated, user flags first and in
    their order.
  """
  tokens = (existing or "").split()
  present = {_flag_name(t) for t in tokens}
  for flag in defaults:
    if _flag_name(flag) not in present:
      tokens.append(flag)
      present.add(_flag_name(flag))
  return " ".join(tokens)


def ynn_opted_out(env: Mapping[str, str]) -> bool:
  """True when ``SDESEG_CPU_YNN`` asks for XLA's YNNPACK default."""
  return env.get(OPT_OUT_ENV, "").strip().lower() in ("1", "true", "yes")


def apply_defaults(env: MutableMapping[str, str] | None = None) -> str:
  """Adds the project's XLA CPU defaults to ``env["XLA_FLAGS"]``.

  Args:
    env: the environment to edit (default ``os.environ``).

  Returns:
    The resulting ``XLA_FLAGS`` ("" when unset and opted out).
  """
  env = os.environ if env is None else env
  if ynn_opted_out(env):
    return env.get("XLA_FLAGS", "")
  old = env.get("XLA_FLAGS", "")
  new = merged_xla_flags(old)
  if new != old:
    env["XLA_FLAGS"] = new
    if env is os.environ and _backend_started():
      warnings.warn(
          f"sdeseg_jax: a JAX backend was created before sdeseg_jax was "
          f"imported, so XLA_FLAGS {CPU_DEFAULT_FLAGS[0]!r} has no effect in "
          f"this process; import sdeseg_jax first (or set XLA_FLAGS "
          f"yourself)", stacklevel=2)
  return new


def _backend_started() -> bool:
  # Only looks: never imports jax (which would be slow) nor starts anything.
  xb = sys.modules.get("jax._src.xla_bridge")
  return bool(xb is not None and getattr(xb, "_backends", None))
