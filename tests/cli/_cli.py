"""Shared helpers for tests that drive the real command lines in a subprocess.

Each catalogue test runs ``python -m <module> ...`` exactly as a user would,
then checks the exit code, the last line of stderr, that no traceback was
printed, and that nothing outside the workdir changed (``tree_digest``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Result:
  returncode: int
  stdout: str
  stderr: str

  @property
  def last_error_line(self) -> str:
    lines = [l for l in self.stderr.splitlines() if l.strip()]
    return lines[-1] if lines else ""

  @property
  def has_traceback(self) -> bool:
    return "Traceback (most recent call last)" in self.stderr + self.stdout


def _env(env: dict[str, str] | None) -> dict[str, str]:
  full_env = dict(os.environ)
  # The test process's 4 fake devices and compilation cache are its own.
  full_env.pop("XLA_FLAGS", None)
  full_env["JAX_PLATFORMS"] = "cpu"
  full_env.setdefault("PYTHONUNBUFFERED", "1")
  full_env.update(env or {})
  return full_env


def run_module(module: str, *args: str, timeout: float = 600,
               env: dict[str, str] | None = None, cwd: str = REPO) -> Result:
  """Runs ``python -m module *args`` on one CPU device and returns it."""
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                        env=_env(env), capture_output=True, text=True,
                        timeout=timeout, check=False)
  return Result(proc.returncode, proc.stdout, proc.stderr)


def start_main(*args: str, env: dict[str, str] | None = None,
               cwd: str = REPO) -> subprocess.Popen:
  """Starts ``python -m sdeseg_jax.main *args`` (one CPU device) and returns
  the process, its stderr merged into its stdout (a text pipe read line by
  line), for tests that signal it while it runs."""
  return subprocess.Popen(
      [sys.executable, "-m", "sdeseg_jax.main", *args], cwd=cwd,
      env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def run_main(*args: str, **kwargs) -> Result:
  """``python -m sdeseg_jax.main *args``."""
  return run_module("sdeseg_jax.main", *args, **kwargs)


def tree_digest(path: str) -> str:
  """A digest of every file's relative path and bytes below ``path``."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      h.update(os.path.relpath(full, path).encode() + b"\0")
      with open(full, "rb") as f:
        h.update(f.read())
  return h.hexdigest()
