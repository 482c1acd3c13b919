"""The project's error types and the command-line wrapper that reports them.

An error the user can fix (a missing or corrupt file, a wrong config key, a
checkpoint of another model, a full disk, a non-finite loss) reaches the user
of a command line as one line on stderr, ``error: <what>, <which file or
key>, <what to do>``, and exit code 1, not at the end of a traceback. Set
``SDESEG_TRACEBACK=1`` (or, for ``sdeseg_jax.main``, pass ``--verbosity=1``)
to get the traceback instead; an unexpected error (a bug) always shows it.

Every command line wraps its ``main`` with :func:`cli_main`, once.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable

TRACEBACK_ENV = "SDESEG_TRACEBACK"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_CONFIGS_DIR = os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")


class UserError(Exception):
  """An error the user fixes; its message says what, where and what to do."""


class ConfigError(UserError, ValueError):
  """A config value or command-line argument that cannot work."""


class CheckpointError(UserError):
  """A workdir's checkpoints cannot be used (other model, unreadable...)."""


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a non-finite loss or gradient."""


# Built-in types that project code raises with a deliberate message. Raised
# anywhere else they are taken for a bug and keep their traceback.
_PROJECT_RAISED = (ValueError, KeyError, FloatingPointError)


def _raised_in_project(exc: BaseException) -> bool:
  tb = exc.__traceback__
  last = None
  while tb is not None:
    last = tb
    tb = tb.tb_next
  if last is None:
    return False
  path = os.path.abspath(last.tb_frame.f_code.co_filename)
  return any(path.startswith(d + os.sep) for d in (_PACKAGE_DIR, _CONFIGS_DIR))


def is_user_error(exc: BaseException) -> bool:
  """True for an error reported as one line (see the module docstring).

  Args:
    exc: the exception that ended a command.

  Returns:
    True for :class:`UserError`, for every ``OSError`` (a file system
    problem: missing file, no permission, disk full; its message names the
    path), and for ``ValueError``/``KeyError``/``FloatingPointError`` raised
    by the project's own code (``sdeseg_jax/`` or ``configs/``).
  """
  if isinstance(exc, (UserError, OSError)):
    return True
  return isinstance(exc, _PROJECT_RAISED) and _raised_in_project(exc)


def message(exc: BaseException) -> str:
  """The one-line form of ``exc``."""
  if isinstance(exc, KeyError) and len(exc.args) == 1:
    text = str(exc.args[0])  # str(KeyError) adds quotes
  else:
    text = str(exc)
  if isinstance(exc, OSError) and not isinstance(exc, UserError):
    if exc.filename and str(exc.filename) not in text:
      text = f"{exc.filename}: {text}"
  text = " ".join(text.split()) or type(exc).__name__
  return f"error: {text}"


def traceback_requested() -> bool:
  """``SDESEG_TRACEBACK`` is set (not 0), or absl logs at debug level."""
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  absl_logging = sys.modules.get("absl.logging")
  try:
    return absl_logging is not None and absl_logging.get_verbosity() >= 1
  except Exception:  # pylint: disable=broad-except
    return False


def report(exc: BaseException, stream=None) -> None:
  """Writes ``exc`` to stderr: one line, or the traceback if requested."""
  stream = sys.stderr if stream is None else stream
  if traceback_requested():
    traceback.print_exception(exc, file=stream)
  stream.write(message(exc) + "\n")
  stream.flush()


def cli_main(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps a command line's ``main``: a user error exits 1 with one line.

  Other exceptions (bugs) propagate with their traceback. The wrapped
  function's return value is passed through.

  Args:
    fn: the command line's ``main``.

  Returns:
    The wrapped function.
  """
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e):
        raise
      report(e)
      raise SystemExit(1) from None
  return wrapper
