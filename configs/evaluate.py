r"""Mode ``evaluate``: a checkpoint of a training run on a split, no training.

  python -m sdeseg_jax.main --workdir=OUT \
      --config=configs/evaluate.py:run=/runs/ssl_cs,step=best,protocol=both

Arguments: ``run`` (the training workdir), ``step`` (``latest``, ``best``,
``all`` or step numbers separated by ``/``), ``split`` (default: the run's
``config.eval.split``), ``protocol`` (SSL runs: ``paper``, ``full`` or
``both``; default the run's), ``num_batches`` (0 = the whole split; default the run's),
``path`` (the validation data moved: its new folder; SSDA runs:
``data_root``). The 16- and 13-class Synthia mIoUs come from the run's
``config.eval.class_subsets``; ``aggregate --classes`` recomputes any subset
from the per-class IoUs. Writes the files of in-training evaluation into
``--workdir`` (``docs/workflows/evaluate.md``).
"""

from configs import common

VARIANTS = ("run=/tmp/run", "run=/tmp/run,step=best,protocol=both,split=val")


def get_config(arg=None):
  a = common.parse_arg(arg, run="", step="latest", model="student", split="",
                       protocol="", num_batches=-1, batch=0, path="",
                       data_root="", tfds_dir="", runlocal=False)
  if a.runlocal:  # a quick check: one batch of the split
    a.num_batches = 1
  config = common.mlc.ConfigDict()
  config.mode = "evaluate"
  config.evaluate = common.mlc.ConfigDict(dict(
      run=a.run, step=a.step,
      model=a.model,  # whose records decide step=best
      split=a.split, protocol=a.protocol, num_batches=a.num_batches,
      batch_size=a.batch, path=a.path, data_root=a.data_root,
      tfds_dir=a.tfds_dir))
  return config
