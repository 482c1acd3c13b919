"""Paired ablation tables, shared by ssl_minicity.py and ssda_minicity.py.

A table is rows x seeds of training runs. Within a seed every row sees the
same labeled subset and the same random initial weights for the parameters
the rows have in common, so the per-seed differences between two rows
cancel the subset's (large) effect; the papers note the same ("the chosen
subset affects all configurations equally"). What this module does:

* ``RunStore``: one JSON file in the workdir with every finished
  ``(row, seed)`` run; a rerun skips those, an interrupted table continues.
* ``run_table``: the loop (seed-major, so an interrupted table holds
  complete seeds), with progress lines (row, seed, elapsed, ETA) and the
  pairing check before each training.
* ``check_pairing``: every row of a seed has the same labeled subset and
  identical initial values (``fingerprint``) for every parameter it shares
  with another row (same path, same shape); else ``PairingError`` naming
  the rows, the seed and the first differing item.
* ``paired_diff`` / ``verdict`` / ``report``: per row mean +- std, the mean
  paired difference to the baseline with a Student-t interval over seeds,
  and for each of the papers' orderings whether it holds here (the
  interval excludes 0 on the paper's side).

No jax at module level (``--help`` stays instant); scipy (a jax
dependency) gives the t quantiles.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

STORE_NAME = "ablation_runs.json"


# -- statistics --------------------------------------------------------------


def t_quantile(df: int, level: float = 0.95) -> float:
  """Two-sided Student-t critical value: ``P(|T_df| <= t) = level``."""
  if df < 1:
    raise ValueError(f"t quantile needs df >= 1, got {df}")
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(0.5 + level / 2, df))


class Paired(NamedTuple):
  """Mean of per-seed differences ``a - b`` with its t interval.

  Attributes:
    n: seeds both rows have.
    mean: mean difference.
    std: sample standard deviation of the differences (ddof 1; NaN for n 1).
    lo, hi: the ``level`` interval ``mean -+ t * std / sqrt(n)`` (NaN for
      n < 2).
    seeds: the seeds used, sorted.
  """
  n: int
  mean: float
  std: float
  lo: float
  hi: float
  seeds: tuple[int, ...]


def paired_diff(a: Mapping[int, float], b: Mapping[int, float],
                level: float = 0.95) -> Paired:
  """Paired difference of two rows over the seeds both have.

  Args:
    a, b: ``{seed: value}`` of each row.
    level: confidence level of the interval.

  Returns:
    The ``Paired`` statistics of ``a[s] - b[s]``.
  """
  seeds = tuple(sorted(set(a) & set(b)))
  d = np.array([a[s] - b[s] for s in seeds], np.float64)
  n = len(d)
  if n == 0:
    nan = float("nan")
    return Paired(0, nan, nan, nan, nan, seeds)
  mean = float(d.mean())
  if n < 2:
    nan = float("nan")
    return Paired(1, mean, nan, nan, nan, seeds)
  std = float(d.std(ddof=1))
  half = t_quantile(n - 1, level) * std / np.sqrt(n)
  return Paired(n, mean, std, mean - half, mean + half, seeds)


class Ordering(NamedTuple):
  """A claim of the papers: row ``hi`` beats row ``lo``.

  Attributes:
    hi, lo: row names.
    paper_delta: the papers' mIoU difference hi - lo (percentage points;
      None where they state the ordering without a number).
    source: where it is reported (e.g. ``"IJCV Tab. 3, 372 labels"``).
  """
  hi: str
  lo: str
  paper_delta: float | None
  source: str


HOLDS = "holds"
NOT_HOLD = "does not hold"


def verdict(p: Paired) -> str:
  """``holds`` when the interval of ``hi - lo`` lies above 0; otherwise
  ``does not hold`` (with ``(reversed)`` when it lies below 0, ``(< 2
  seeds)`` when there is no interval)."""
  if p.n < 2:
    return NOT_HOLD + " (< 2 seeds)"
  if p.lo > 0:
    return HOLDS
  if p.hi < 0:
    return NOT_HOLD + " (reversed)"
  return NOT_HOLD


# -- pairing ---------------------------------------------------------------


class PairingError(ValueError):
  """Two rows of one seed differ in their labeled subset or shared init."""


def fingerprint(tree: Any) -> dict[str, list]:
  """``{path: [shape, sha1 of the bytes]}`` of every array leaf of a tree.

  Paths are ``jax.tree_util.keystr`` of the leaf (``['encoder']['conv1']
  ['kernel']``); equal values of equal shape and dtype hash equally.
  """
  import jax  # pylint: disable=g-import-not-at-top
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    a = np.ascontiguousarray(np.asarray(leaf))
    h = hashlib.sha1(str(a.dtype).encode() + a.tobytes()).hexdigest()[:16]
    out[jax.tree_util.keystr(path)] = [list(a.shape), h]
  return out


def _pair_mismatch(ra: str, pa: Mapping[str, Any], rb: str,
                   pb: Mapping[str, Any], seed: int) -> str | None:
  """Why rows ``ra`` and ``rb`` of ``seed`` are not paired (None: paired)."""
  if list(pa["subset"]) != list(pb["subset"]):
    only_a = sorted(set(pa["subset"]) - set(pb["subset"]))[:3]
    only_b = sorted(set(pb["subset"]) - set(pa["subset"]))[:3]
    return (f"seed {seed}: rows {ra!r} and {rb!r} have different labeled "
            f"subsets ({len(pa['subset'])} vs {len(pb['subset'])} images; "
            f"only in {ra!r}: {only_a}, only in {rb!r}: {only_b})")
  ia, ib = pa["init"], pb["init"]
  shared = [k for k in ia if k in ib and list(ia[k][0]) == list(ib[k][0])]
  bad = [k for k in shared if ia[k][1] != ib[k][1]]
  if bad:
    return (f"seed {seed}: rows {ra!r} and {rb!r} start from different "
            f"initial values for {len(bad)} of their {len(shared)} shared "
            f"parameters, first {bad[0]} ({ia[bad[0]][1]} vs "
            f"{ib[bad[0]][1]})")
  return None


def check_pairing(pairing: Mapping[tuple[str, int], Mapping[str, Any]]
                  ) -> None:
  """Asserts that the runs of each seed are paired.

  Args:
    pairing: ``{(row, seed): {"subset": [labeled image names], "init":
      fingerprint(initial random weights)}}``.

  Raises:
    PairingError: naming the seed, both rows and what differs.
  """
  by_seed: dict[int, list[str]] = {}
  for row, seed in pairing:
    by_seed.setdefault(seed, []).append(row)
  for seed, rows in sorted(by_seed.items()):
    for i, ra in enumerate(rows):
      for rb in rows[i + 1:]:
        why = _pair_mismatch(ra, pairing[(ra, seed)], rb,
                             pairing[(rb, seed)], seed)
        if why:
          raise PairingError(why)


# -- resumable runs ----------------------------------------------------------


class RunStore:
  """The finished runs of one table: ``<workdir>/ablation_runs.json``.

  ``{"benchmark", "regime": {...}, "runs": {"<row>/seed<seed>": record}}``;
  a record holds at least ``miou``, ``seconds`` and ``pairing``. Written
  atomically after every run, so a kill loses at most the run in progress.
  """

  def __init__(self, workdir: str, benchmark: str,
               regime: Mapping[str, Any]):
    self.path = os.path.join(workdir, STORE_NAME)
    self.benchmark = benchmark
    self.regime = json.loads(json.dumps(dict(regime)))
    self.runs: dict[str, dict[str, Any]] = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        try:
          data = json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f"{self.path}: not valid JSON ({e}); delete it "
                           "to start the table again") from e
      diff = sorted(k for k in set(data["regime"]) | set(self.regime)
                    if data["regime"].get(k) != self.regime.get(k))
      if data["benchmark"] != benchmark or diff:
        was = data["regime"]
        what = ", ".join(f"{k}: {was.get(k)!r} there, "
                         f"{self.regime.get(k)!r} now" for k in diff)
        raise ValueError(
            f"{self.path} holds runs of {data['benchmark']} with another "
            f"setting ({what or 'another benchmark'}); use another "
            "--workdir or the same arguments")
      self.runs = data["runs"]
    else:
      os.makedirs(workdir, exist_ok=True)

  @staticmethod
  def key(row: str, seed: int) -> str:
    return f"{row}/seed{seed}"

  def done(self, row: str, seed: int) -> bool:
    return self.key(row, seed) in self.runs

  def get(self, row: str, seed: int) -> dict[str, Any]:
    return self.runs[self.key(row, seed)]

  def put(self, row: str, seed: int, record: Mapping[str, Any]) -> None:
    self.runs[self.key(row, seed)] = dict(record, row=row, seed=seed)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"benchmark": self.benchmark, "regime": self.regime,
                 "runs": self.runs}, f, indent=1)
    os.replace(tmp, self.path)

  def pairing(self) -> dict[tuple[str, int], Mapping[str, Any]]:
    return {(r["row"], r["seed"]): r["pairing"] for r in self.runs.values()}

  def values(self, row: str, key: str = "miou") -> dict[int, float]:
    """``{seed: record[key]}`` of one row's finished runs."""
    return {r["seed"]: float(r[key]) for r in self.runs.values()
            if r["row"] == row}


def step_seconds(workdir: str, tag: str = "loss") -> float:
  """Seconds per training step of a run, from its TensorBoard events.

  The wall times of the first and the last logged ``tag`` over the steps
  between them: compilation (before the first log) and the final
  evaluation (after the last) are left out. NaN with fewer than two logs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  when = {}
  for f in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for e in tf.compat.v1.train.summary_iterator(f):
      if any(v.tag == tag for v in e.summary.value):
        when[int(e.step)] = e.wall_time
  if len(when) < 2:
    return float("nan")
  a, b = min(when), max(when)
  return (when[b] - when[a]) / (b - a)


def _hms(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_table(store: RunStore, rows: Sequence[str], seeds: Sequence[int],
              *, pairing: Callable[[str, int], Mapping[str, Any]],
              train: Callable[[str, int], Mapping[str, Any]],
              log: Callable[[str], None] = lambda m: print(m, flush=True)
              ) -> None:
  """Runs every missing ``(row, seed)``, seed by seed.

  Args:
    store: the table's ``RunStore`` (finished runs are skipped).
    rows, seeds: the table.
    pairing: ``(row, seed) -> {"subset", "init"}``, computed before the
      training and checked against the seed's finished runs
      (``check_pairing``) so a mismatch fails before costing a run.
    train: ``(row, seed) -> record`` (with ``miou``; ``seconds`` and
      ``pairing`` are added).
    log: where the progress lines go.

  Raises:
    PairingError: a run would not be paired with its seed's other rows.
  """
  todo = [(r, s) for s in seeds for r in rows if not store.done(r, s)]
  total = len(rows) * len(seeds)
  if len(todo) < total:
    log(f"{store.path}: {total - len(todo)} of {total} runs done, "
        f"{len(todo)} to go")
  t0 = time.time()
  spent = []
  for i, (row, seed) in enumerate(todo):
    p = dict(pairing(row, seed))
    check_pairing({**store.pairing(), (row, seed): p})
    if spent:
      eta = _hms(np.mean(spent) * (len(todo) - i))
    else:
      past = [r["seconds"] for r in store.runs.values()]
      eta = _hms(np.mean(past) * (len(todo) - i)) if past else "?"
    log(f"[{total - len(todo) + i + 1}/{total}] {row} seed {seed}: "
        f"starting (elapsed {_hms(time.time() - t0)}, ETA {eta})")
    ts = time.time()
    rec = dict(train(row, seed))
    spent.append(time.time() - ts)
    rec.update(seconds=round(spent[-1], 1), pairing=p)
    store.put(row, seed, rec)
    log(f"[{total - len(todo) + i + 1}/{total}] {row} seed {seed}: "
        f"mIoU {rec['miou']:.2f} in {spent[-1]:.0f} s")


# -- report ------------------------------------------------------------------


def _num(x: float) -> float | None:
  """``x``, or None for NaN (the JSON line stays standard JSON)."""
  return None if np.isnan(x) else float(x)


def _ci(p: Paired) -> str:
  if p.n < 2:
    return "-"
  return f"[{p.lo:+.2f}, {p.hi:+.2f}]"


def report(store: RunStore, rows: Sequence[str], baseline: str,
           orderings: Iterable[Ordering], *, level: float = 0.95,
           key: str = "miou", log: Callable[[str], None] = print
           ) -> dict[str, Any]:
  """Prints the table and the orderings; returns them for the JSON line.

  Per row: seeds, mean +- std (sample std) of ``key``, the mean paired
  difference to ``baseline`` and its ``level`` t interval over seeds; then
  per ordering the paper's difference, the paired difference here with
  its interval, and ``verdict``. Rows or orderings without runs are left
  out; in the returned dict a missing figure (one seed: no std, no
  interval) is None.
  """
  import _report  # pylint: disable=g-import-not-at-top
  base = store.values(baseline, key)
  table, cells = {}, []
  for r in rows:
    v = store.values(r, key)
    if not v:
      continue
    x = np.array(list(v.values()))
    std = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    p = paired_diff(v, base, level)
    table[r] = {"seeds": sorted(v), "runs": [v[s] for s in sorted(v)],
                "mean": float(x.mean()), "std": _num(std),
                "delta": _num(p.mean), "delta_ci": [_num(p.lo), _num(p.hi)]}
    sd = f"{std:5.2f}" if len(x) > 1 else "    -"
    cells.append((r, str(len(x)), f"{x.mean():6.2f} +- {sd}",
                  "" if r == baseline else f"{p.mean:+.2f}",
                  "" if r == baseline else _ci(p)))
  pct = f"{100 * level:g}%"
  _report.table([("row", 14, ""), ("n", 3, ""), ("mIoU mean +- sd", 16, ""),
                 (f"d vs {baseline}", 12, ""), (f"{pct} CI (paired t)",
                                                18, "")], cells)
  checks = []
  log(f"\nThe papers' orderings (hi > lo; holds = the {pct} interval of the "
      "paired difference lies above 0):")
  for o in orderings:
    if o.hi not in table or o.lo not in table:
      continue
    p = paired_diff(store.values(o.hi, key), store.values(o.lo, key), level)
    v = verdict(p)
    checks.append({"hi": o.hi, "lo": o.lo, "paper_delta": o.paper_delta,
                   "source": o.source, "n": p.n, "delta": _num(p.mean),
                   "ci": [_num(p.lo), _num(p.hi)], "verdict": v})
    paper = ("   n/a" if o.paper_delta is None
             else f"{o.paper_delta:+6.2f}")
    log(f"  {o.hi + ' > ' + o.lo:32s} paper {paper} "
        f"({o.source}); here {p.mean:+6.2f} {_ci(p):18s} n={p.n}: {v}")
  return {"rows": table, "orderings": checks, "level": level,
          "baseline": baseline}


# -- what pairs a run --------------------------------------------------------


def labeled_names(stream, data_dir: str) -> list[str]:
  """``relpath`` of each image of a stream's labeled subset, in order.

  Prepares the stream's tfds data if needed (the run reuses it).
  """
  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.data import builder as builder_lib
  from sdeseg_jax.data import pipeline
  # pylint: enable=g-import-not-at-top
  source = builder_lib.prepare(stream, data_dir).as_data_source(
      split="train")
  names = []
  for i in pipeline.labeled_indices(stream, len(source)):
    p = source[int(i)]["relpath"]
    names.append(p.decode() if isinstance(p, bytes) else str(p))
  return names


def run_pairing(task, config, example_batch, stream, data_dir: str
                ) -> dict[str, Any]:
  """``{"subset", "init"}`` of one run, for ``check_pairing``.

  ``init`` fingerprints the random initial weights (params and batch
  statistics) exactly as the trainer draws them (``trainer.
  create_state_fn``, run eagerly here), before any pretrained or SDE
  weights are loaded: rows that load an SDE share its weights across
  seeds anyway, and every other part must be the seed's common draw.

  Args:
    task: the run's task (``ssl.SSLTask`` / ``ssda.SSDATask``).
    config: its config.
    example_batch: what ``task.init`` reads (shapes).
    stream: the labeled stream (paths resolved).
    data_dir: the tfds data directory of the run.
  """
  from sdeseg_jax.train import trainer  # pylint: disable=g-import-not-at-top
  create = trainer.create_state_fn(task, config,
                                   trainer.abstract_batch(example_batch))
  state = create()
  return {"subset": labeled_names(stream, data_dir),
          "init": fingerprint({"params": state.params,
                               "batch_stats": state.batch_stats})}
