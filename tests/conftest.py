"""Test-wide setup: 4 fake CPU devices, absl flags parsed for grain workers,
and a persistent compilation cache private to the pytest process."""

import atexit
import os
import shutil
import tempfile

# Must happen before jax initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The project's XLA CPU defaults (sdeseg_jax/utils/compiler.py), appended
# here explicitly so the tests compile as the training runs do.
from sdeseg_jax.utils import compiler  # noqa: E402

compiler.apply_defaults()

from absl import flags  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

# grain worker processes read absl flags; pytest never parses them.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def _remove_cache(path: str, owner: int) -> None:
  # Only the process that made the folder removes it (a forked or spawned
  # child importing this file must not delete its parent's cache).
  if os.getpid() == owner:
    shutil.rmtree(path, ignore_errors=True)


# Compiling dominates the slow tests on a CPU, and several compile the same
# computation more than once in one process (the demo's two SDE stages, a
# resumed run, the same tiny step in several tests): XLA's persistent cache
# turns the repeats into a load. It lives in a fresh folder per pytest run,
# so no state leaks between runs; set JAX_COMPILATION_CACHE_DIR to keep one
# across runs instead. Only compiles of >= 1 s are worth writing.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _CACHE_DIR = tempfile.mkdtemp(prefix="sdeseg_jax_test_cache_")
  atexit.register(_remove_cache, _CACHE_DIR, os.getpid())
  jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)



# Parity tests compare against PyTorch, torchvision and cityscapesscripts and
# skip where those are missing (a developer's machine). In CI (CI=true, set
# when CI runs .ci/run) the packages are installed from requirements-dev.txt,
# so such a skip means a parity test silently vanished: it fails instead.
PARITY_PACKAGES = ("torch", "torchvision", "cityscapesscripts")


def in_ci() -> bool:
  """True when the tests run in CI (environment variable CI=true or 1)."""
  return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def parity_skip_reason(report) -> str:
  """The message of a skip caused by a missing parity package, or ""."""
  longrepr = report.longrepr
  reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
  if any(p in reason.lower() for p in PARITY_PACKAGES):
    return reason
  return ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  del call
  outcome = yield
  report = outcome.get_result()
  if report.skipped and in_ci():
    reason = parity_skip_reason(report)
    if reason:
      report.outcome = "failed"
      report.longrepr = (
          f"{item.nodeid} was skipped in CI ({reason}); parity tests must "
          "run in CI: install requirements-dev.txt (torch, torchvision, "
          "cityscapesscripts)")
