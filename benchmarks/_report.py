"""Pieces shared by the benchmark scripts of this folder.

Every ``benchmarks/<name>.py`` is run as a script (``python
benchmarks/<name>.py``), prints its figures for a reader and ends with one
JSON line for machines (docs/benchmarks.md). Python puts the script's folder
on ``sys.path``, so a script imports this module as ``import _report``;
importing it puts the repository root on ``sys.path`` too, so that
``configs`` and ``sdeseg_jax`` import from the checkout.

Nothing here imports jax at module level: ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)


# -- arguments ---------------------------------------------------------------


def parser(doc: str | None, *, first_line: bool = True
           ) -> argparse.ArgumentParser:
  """An argument parser described by a script's docstring.

  Args:
    doc: the script's ``__doc__`` (``None``: no description).
    first_line: describe the script by the first line of ``doc`` only
      (``False``: the whole docstring, usage examples included).

  Returns:
    The parser.
  """
  if doc is not None and first_line:
    doc = doc.split("\n")[0]
  return argparse.ArgumentParser(description=doc)


def add_step_cost_args(p: argparse.ArgumentParser, *, batch: int,
                       steps: int, steps_help: str | None = None,
                       image_size: bool = True, dtype: bool = True) -> None:
  """The network-size arguments of the ``step_cost*`` scripts.

  Adds ``--depth`` (ResNet depth, default 101), ``--height``/``--width``
  (default 512; only with ``image_size``), ``--batch``, ``--steps`` (timed
  steps), ``--dtype`` (default float32; only with ``dtype``), ``--remat``
  (``config.model.remat``, default none) and ``--buffers`` (list that many
  of the compiled step's biggest buffers, see ``biggest_buffers``).

  Args:
    p: the parser to add them to.
    batch: default ``--batch``.
    steps: default ``--steps``.
    steps_help: help text of ``--steps``.
    image_size: add ``--height`` and ``--width``.
    dtype: add ``--dtype``.
  """
  p.add_argument("--depth", type=int, default=101)
  if image_size:
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
  p.add_argument("--batch", type=int, default=batch)
  p.add_argument("--steps", type=int, default=steps, help=steps_help)
  if dtype:
    p.add_argument("--dtype", default="float32")
  p.add_argument("--remat", default="none",
                 choices=("none", "encoder_stage", "encoder_block",
                          "decoder_block", "full"),
                 help="config.model.remat (models/layers.py)")
  p.add_argument("--buffers", type=int, default=0,
                 help="report the N biggest buffers of the compiled step")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None, *,
          absl: bool = False, quiet: bool = False) -> argparse.Namespace:
  """Parses the command line; optionally prepares absl for the library.

  Args:
    p: the parser.
    argv: arguments (default ``sys.argv[1:]``).
    absl: mark absl flags as parsed; grain worker processes and absl
      logging read them, and the script never parses absl flags itself.
    quiet: absl logging at WARNING (training loops log every few steps).

  Returns:
    The parsed arguments.
  """
  args = p.parse_args(argv)
  if absl or quiet:
    from absl import flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS.mark_as_parsed()
  if quiet:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)
  return args


# -- output ------------------------------------------------------------------


def emit_json(result: dict[str, Any]) -> None:
  """Prints ``result`` as the script's last line: one JSON object."""
  print(json.dumps(result))


def print_fields(result: dict[str, Any], skip: Iterable[str] = (),
                 width: int = 24) -> None:
  """Prints ``key: value`` lines, keys right-aligned in ``width``."""
  skip = set(skip)
  for k, v in result.items():
    if k not in skip:
      print(f"{k:>{width}}: {v}")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and (population) standard deviation, as Python floats."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std())


def pm(values: Sequence[float], width: int = 6, std_width: int = 5,
       digits: int = 2) -> str:
  """``"mean +- std"`` of ``values`` in fixed widths (``" 41.20 +-  0.35"``).

  Args:
    values: per-seed figures.
    width: field width of the mean.
    std_width: field width of the standard deviation.
    digits: decimals of both.

  Returns:
    The formatted cell.
  """
  m, s = mean_std(values)
  return f"{m:{width}.{digits}f} +- {s:{std_width}.{digits}f}"


def table(columns: Sequence[tuple[str, int, str]],
          rows: Iterable[Sequence[Any]]) -> None:
  """Prints a table of fixed-width columns, header first.

  The first column (the row name) is left-aligned, the others are
  right-aligned; a string cell (e.g. a :func:`pm` cell) is printed as is,
  a number with the column's format.

  Args:
    columns: ``(header, width, number format)`` per column, e.g.
      ``("nearer", 8, ".3f")``; the format of the first column is unused.
    rows: one sequence of cells per row, name first.
  """

  def number(x, w, fmt):
    # A sign option ("+.2f") goes before the width: "+12.2f".
    sign = fmt[:1] if fmt[:1] in ("+", "-", " ") else ""
    return f"{x:{sign}{w}{fmt[len(sign):]}}"

  head = [f"{columns[0][0]:{columns[0][1]}s}"] + [
      f"{name:>{w}s}" for name, w, _ in columns[1:]]
  print(" ".join(head))
  for row in rows:
    cells = [f"{row[0]:{columns[0][1]}s}"]
    for cell, (_, w, fmt) in zip(row[1:], columns[1:]):
      cells.append(f"{cell:>{w}s}" if isinstance(cell, str)
                   else number(cell, w, fmt))
    print(" ".join(cells))


# -- step cost measurements --------------------------------------------------


def random_intrinsics(height: int, width: int) -> np.ndarray:
  """Plausible pinhole intrinsics ``[4, 4]`` float32 for random images."""
  return np.array([[1.1 * width, 0, width / 2, 0],
                   [0, 2.2 * height, height / 2, 0],
                   [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)


def param_count(tree: Any) -> int:
  """Number of scalars in a tree of arrays or ShapeDtypeStructs."""
  import jax  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def with_shardings(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of ``shapes`` carrying ``shardings`` (for lowering)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      shapes, shardings)


class CompiledStep(NamedTuple):
  """A train step compiled for one global batch (:func:`compile_train_step`).

  Attributes:
    compiled: the compiled step, ``state, metrics = compiled(state, batch)``.
    compile_s: lowering + compile seconds.
    batch: the global batch it was compiled for.
    num_params: scalars in the model parameters.
    init: builds a fresh, sharded train state (compiles the init).
  """
  compiled: Any
  compile_s: float
  batch: Any
  num_params: int
  init: Callable[[], Any]


def compile_train_step(task, config, host_batch: Any, mesh) -> CompiledStep:
  """Compiles the engine's jitted train step for ``host_batch``.

  The state is only described (``jax.eval_shape``) for the compile, so
  ``--compile_only`` style runs never materialise it.

  Args:
    task: the mode's task (``sde.SDETask``, ``ssl.SSLTask``, ...).
    config: the run's config.
    host_batch: one global batch of numpy arrays.
    mesh: the device mesh.

  Returns:
    The :class:`CompiledStep`.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from sdeseg_jax.train import step as step_lib
  from sdeseg_jax.train import trainer
  from sdeseg_jax.utils import sharding
  # pylint: enable=g-import-not-at-top
  batch = sharding.host_to_global(host_batch, mesh)
  create = trainer.create_state_fn(task, config,
                                   trainer.abstract_batch(host_batch))
  shapes = jax.eval_shape(create)
  st = step_lib.state_sharding(shapes, mesh)
  jstep = step_lib.jit_train_step(task, config, mesh, shapes)
  compiled, compile_s = compile_timed(jstep, with_shardings(shapes, st),
                                      batch)
  return CompiledStep(compiled, compile_s, batch,
                      param_count(shapes.params),
                      lambda: jax.jit(create, out_shardings=st)())


def compile_timed(jitted, *args) -> tuple[Any, float]:
  """Lowers and compiles ``jitted`` for ``args``; returns it and seconds."""
  t = time.time()
  compiled = jitted.lower(*args).compile()
  return compiled, time.time() - t


def memory_mib(compiled) -> dict[str, float]:
  """``mem_{argument,output,temp,generated_code}_mib`` of a compiled step,
  their sum ``mem_argument_plus_temp_mib``, the step's ``flops`` (XLA's cost
  analysis) and ``peak_device_mib``, the first local device's peak memory
  in use so far (None where the backend does not track it, e.g. CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  mib = lambda b: round(b / 2**20, 1)
  return {"mem_argument_mib": mib(mem.argument_size_in_bytes),
          "mem_output_mib": mib(mem.output_size_in_bytes),
          "mem_temp_mib": mib(mem.temp_size_in_bytes),
          "mem_generated_code_mib": mib(mem.generated_code_size_in_bytes),
          # Outputs alias the donated state, so arguments + temporaries is
          # what the step needs on the device.
          "mem_argument_plus_temp_mib": mib(mem.argument_size_in_bytes +
                                            mem.temp_size_in_bytes),
          "flops": float((cost or {}).get("flops", float("nan"))),
          "peak_device_mib": None if peak is None else mib(peak)}


def biggest_buffers(compiled, n: int) -> list[dict[str, Any]]:
  """The ``n`` biggest logical buffers of a compiled step.

  Reads the optimised HLO module (``compiled.as_text()``): every
  instruction's result shape, with the op name and the ``op_name`` metadata
  (the JAX source of the value, e.g. ``jvp(SegDepthNet)/encoder/layer3_4/
  conv2``). Sizes are of single values; XLA's buffer assignment may share
  one allocation between values whose lifetimes do not overlap, so the list
  says what is big, not what is live at the peak.

  Args:
    compiled: a ``jax.stages.Compiled``.
    n: how many to return.

  Returns:
    ``[{"mib", "shape", "op", "source"}]``, biggest first.
  """
  import re  # pylint: disable=g-import-not-at-top
  sizes = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "u8": 1,
           "s8": 1, "pred": 1, "f64": 8, "s64": 8, "u64": 8}
  line_re = re.compile(
      r"^\s*(?:ROOT\s+)?%?[\w.\-]+ = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\(")
  out = []
  for line in compiled.as_text().splitlines():
    m = line_re.match(line)
    if not m or m.group(1) not in sizes:
      continue
    shape = tuple(int(d) for d in m.group(2).split(",") if d)
    size = sizes[m.group(1)] * int(np.prod(shape, dtype=np.int64))
    if m.group(3) in ("parameter", "constant", "get-tuple-element",
                      "bitcast", "tuple"):
      continue
    src = re.search(r'op_name="([^"]*)"', line)
    out.append({"mib": round(size / 2**20, 1),
                "shape": f"{m.group(1)}{list(shape)}", "op": m.group(3),
                "source": src.group(1) if src else ""})
  out.sort(key=lambda r: -r["mib"])
  return out[:n]


def timed(fn: Callable[[int], Any], calls: int, warmup: int) -> list[float]:
  """Seconds of ``fn(i)`` for ``i = warmup .. calls - 1``.

  Args:
    fn: called with the call index; its result is waited for
      (``jax.block_until_ready``), so asynchronous dispatch is timed fully.
    calls: total number of calls.
    warmup: the first calls, which pay one-time costs and are not timed.

  Returns:
    ``calls - warmup`` durations in seconds.
  """
  import jax  # pylint: disable=g-import-not-at-top
  times = []
  for i in range(calls):
    t = time.time()
    jax.block_until_ready(fn(i))
    if i >= warmup:
      times.append(time.time() - t)
  return times


def time_steps(compiled, state: Any, batch: Any, steps: int, warmup: int
               ) -> tuple[Any, Any, list[float]]:
  """Runs ``state, metrics = compiled(state, batch)`` ``warmup + steps`` times.

  Args:
    compiled: the compiled train step.
    state: the train state (donated to the step).
    batch: one global batch, used for every step.
    steps: timed steps.
    warmup: untimed steps first.

  Returns:
    ``(state, metrics, times)``: the final state, the last metrics and the
    ``steps`` step durations in seconds.
  """
  out = {"state": state, "metrics": None}

  def one(_):
    out["state"], out["metrics"] = compiled(out["state"], batch)
    return out["metrics"]

  times = timed(one, steps + warmup, warmup)
  return out["state"], out["metrics"], times
