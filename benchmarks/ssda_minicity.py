r"""Ablation of the SSDA components on MiniCity (cf. IJCV Tables 11, 13, 15).

  python benchmarks/ssda_minicity.py [--regime paired] \
      [--demo_workdir /tmp/bench_ssda_demo] [--workdir DIR] \
      [--rows target_only,baseline,dacs,...] [--seeds 0,1,2,3,4] [--steps N]

``--regime`` picks every default (``REGIMES``): ``paired`` (the default)
is the issue-12 table sized to finish within an hour on the 2-core box;
``legacy`` is the setting of the figures in docs/benchmarks.md (3 seeds,
100 steps, 8 labeled target images). Any flag given overrides its regime
value.

Every row of ``configs/ssda_gta.py:ROWS`` (target_only, baseline = +
source, dacs = cross-domain ClassMix, cdm, tdm, cdm_tdm, cdm_tdm_mgs, full
= + the multi-task SDE net) trains ``configs/ssda_minicity.py`` with the
same budget (steps, batch sizes, learning rate) on the data, pseudo depth
and target SDE of a demo workdir (its data, SDE and export stages are run
first if missing: ``configs/demo.py`` with the given ``--demo_arg``), and
is evaluated on the target val split (student mIoU).

Runs are paired by seed: the seed draws the labeled target subset
(subset seed 42 + seed), the initial weights and the data order, and every
row of a seed must have the same subset and the same initial values for
the parameters rows share (checked before each run; a mismatch stops the
table naming row and seed). Finished runs are kept in
``<workdir>/ablation_runs.json``: a rerun skips them, an interrupted table
continues. Prints per row mean +- std, the mean paired difference to
target_only with its 95% Student-t interval over seeds, then which of the
papers' orderings (``PAPER_ORDERINGS``) hold here, and ends with one JSON
line.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import _ablation
import _report
import numpy as np

ROWS = ("target_only", "baseline", "dacs", "cdm", "tdm", "cdm_tdm",
        "cdm_tdm_mgs", "full")

# The SSDA orderings of IJCV (GTA5 -> Cityscapes, 100 labeled target
# images): Table 11 (source data), Table 13 (CDM / TDM / MGS; its rows
# without data selection), Table 15 (DACS and the method w/o selection).
PAPER_ORDERINGS = (
    _ablation.Ordering("baseline", "target_only", 5.08, "IJCV Tab. 11"),
    _ablation.Ordering("dacs", "baseline", 7.21, "IJCV Tab. 15 vs 11"),
    _ablation.Ordering("cdm", "baseline", 6.82, "IJCV Tab. 13"),
    _ablation.Ordering("tdm", "baseline", 6.22, "IJCV Tab. 13"),
    _ablation.Ordering("cdm", "tdm", 0.60, "IJCV Tab. 13"),
    _ablation.Ordering("cdm_tdm", "cdm", 0.70, "IJCV Tab. 13"),
    _ablation.Ordering("cdm_tdm", "tdm", 1.30, "IJCV Tab. 13"),
    _ablation.Ordering("cdm_tdm_mgs", "cdm_tdm", 1.65, "IJCV Tab. 13"),
    # The same without the cdm_tdm row (not in the paired regime's rows).
    _ablation.Ordering("cdm_tdm_mgs", "cdm", 2.35, "IJCV Tab. 13"),
    _ablation.Ordering("cdm_tdm_mgs", "tdm", 2.95, "IJCV Tab. 13"),
    _ablation.Ordering("full", "cdm_tdm_mgs", 1.14, "IJCV Tab. 15 vs 13"),
    _ablation.Ordering("full", "dacs", 3.10, "IJCV Tab. 15"),
)

# ``legacy``: the docs/benchmarks.md figures (its row list, 100 steps).
# ``paired``: the issue-12 table (docs/benchmarks.md "Ablation tables").
REGIMES = {
    "legacy": dict(rows="target_only,baseline,cdm,tdm,cdm_tdm,cdm_tdm_mgs,"
                        "full", seeds="0,1,2", steps=100, n=8, batch=4,
                   demo_arg=""),
    # Seven rows (``cdm_tdm`` only with --rows: the hour does not hold it).
    "paired": dict(rows="target_only,baseline,dacs,cdm,tdm,cdm_tdm_mgs,full",
                   seeds="0,1,2,3,4", steps=120, n=8, batch=4, demo_arg=""),
}


def _demo_config(arg: str):
  spec = importlib.util.spec_from_file_location(
      "cfg_demo", os.path.join(_report.REPO_ROOT, "configs", "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def parse_args(argv=None):
  """The command line, with every unset flag taken from ``--regime``."""
  p = _report.parser(__doc__)
  p.add_argument("--regime", default="paired", choices=sorted(REGIMES))
  p.add_argument("--demo_workdir", default="/tmp/bench_ssda_demo")
  p.add_argument("--demo_arg")
  p.add_argument("--workdir", default="",
                 help="default <demo_workdir>/ablation_<regime> (kept: a "
                      "rerun resumes the table)")
  p.add_argument("--rows")
  p.add_argument("--seeds")
  p.add_argument("--steps", type=int)
  p.add_argument("--n", type=int, help="labeled target images")
  p.add_argument("--batch", type=int,
                 help="target, source and union images per step (each)")
  a = _report.parse(p, argv, absl=True, quiet=True)
  for k, v in REGIMES[a.regime].items():
    if getattr(a, k) is None:
      setattr(a, k, v)
  return a


def main(argv=None) -> int:
  a = parse_args(argv)
  # pylint: disable=g-import-not-at-top
  import jax
  from configs import ssda_minicity
  from sdeseg_jax import demo
  from sdeseg_jax.train import ssda
  # pylint: enable=g-import-not-at-top
  rows = [r for r in a.rows.split(",") if r]
  seeds = [int(s) for s in a.seeds.split(",") if s]
  dconf = _demo_config(a.demo_arg)
  dconf.lock()
  # Data, SDEs and pseudo depth of the demo (skipped when present).
  demo.run(dconf, a.demo_workdir,
           stages=("generate", "prepare", "sde_target", "sde_source",
                   "export_target", "export_source"))
  mc = dconf.minicity.target
  root = a.workdir or os.path.join(a.demo_workdir, f"ablation_{a.regime}")
  os.makedirs(root, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(root, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  regime = {k: getattr(a, k) for k in REGIMES["paired"]
            if k not in ("rows", "seeds")}
  regime["demo_workdir"] = os.path.abspath(a.demo_workdir)
  store = _ablation.RunStore(root, "ssda_minicity", regime)

  def config_of(row, seed):
    config = ssda_minicity.get_config(
        f"row={row},n={a.n},steps={a.steps},height={mc.height},"
        f"width={mc.width},crop={mc.height},seed={seed},"
        f"val_count={mc.num_val_sequences}")
    config.data_root = a.demo_workdir
    config.data.tfds_dir = os.path.join(a.demo_workdir, "tfds")
    config.ssda.batch_target = a.batch
    config.ssda.batch_source = a.batch
    config.ssda.batch_unlabeled = a.batch
    config.train.checkpoint_every = a.steps
    # Ten logs: their wall times give the step cost (step_seconds).
    config.train.log_every = max(1, a.steps // 10)
    for s in ("target", "unlabeled"):
      config.data[s].subset.seed = 42 + seed
    return config

  def pairing(row, seed):
    config = config_of(row, seed)
    streams = ssda.resolve_streams(config)
    config = ssda.resolve_init(config)
    return _ablation.run_pairing(ssda.SSDATask(config), config,
                                 ssda.example_batch(config),
                                 streams["target"], config.data.tfds_dir)

  def train(row, seed):
    workdir = os.path.join(root, f"{row}_seed{seed}")
    res = ssda.run(config_of(row, seed), workdir)
    # Rows without a mean teacher (target_only, baseline) have no teacher
    # mIoU.
    return {"miou": res["miou"], "miou_teacher": res.get("miou_teacher"),
            "sec_per_step": round(_ablation.step_seconds(workdir), 4)}

  _ablation.run_table(store, rows, seeds, pairing=pairing, train=train)
  print(f"\nMiniCity target val mIoU (%), {a.n} labeled target images, "
        f"{a.steps} steps, batch {a.batch}+{a.batch}+{a.batch}, "
        f"{mc.width}x{mc.height}, seeds {seeds}, regime {a.regime}")
  out = _ablation.report(store, rows, rows[0], PAPER_ORDERINGS)
  secs = [r["seconds"] for r in store.runs.values()]
  _report.emit_json({"benchmark": "ssda_minicity", "regime": a.regime,
                     **regime, "seeds": seeds,
                     "image": f"{mc.width}x{mc.height}",
                     "sec_per_run": round(float(np.mean(secs)), 1),
                     "store": store.path, **out})
  return 0


if __name__ == "__main__":
  sys.exit(main())
