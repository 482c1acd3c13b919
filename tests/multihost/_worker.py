"""One process of a multi-host (or the one-process reference) training run.

Started by ``tests/multihost/multihost_test.py``, never by pytest itself:

  python tests/multihost/_worker.py --data=D --workdir=W \
      --num_processes=2 --process_id=I --port=P     # one of two processes
  python tests/multihost/_worker.py --data=D --workdir=W \
      --shards=2                                    # the reference

Each process of a multi-host run has one CPU device and calls
``jax.distributed.initialize`` on 127.0.0.1 as ``main.py --distributed``
does (gloo CPU collectives). The reference is one process with ``--shards``
devices whose loaders read, and concatenate, the per-process shards that
the ``--shards`` processes of a multi-host run read; so both see the same
global batches and must reach the same state.

Every step's metrics are appended to ``<workdir>/metrics_p<I>.jsonl``.
``--die_at_step=N``: this process SIGKILLs itself when fetching the batch of
step N, once the checkpoint before it is on disk (a worker lost mid-run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def _args():
  p = argparse.ArgumentParser()
  p.add_argument("--data", required=True, help="generated MiniCity folder")
  p.add_argument("--tfds", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--checkpoint_every", type=int, default=2)
  p.add_argument("--eval", type=int, default=1)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--shards", type=int, default=1)
  p.add_argument("--die_at_step", type=int, default=0)
  p.add_argument("--cache", default="")
  return p.parse_args()


ARGS = _args()
os.environ["JAX_PLATFORMS"] = "cpu"
n_local = ARGS.shards if ARGS.num_processes == 1 else 1
os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={n_local}")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

flags.FLAGS.mark_as_parsed()
logging.set_verbosity(logging.INFO)
if ARGS.num_processes > 1:
  jax.distributed.initialize(f"127.0.0.1:{ARGS.port}", ARGS.num_processes,
                             ARGS.process_id)
# The assertions compare runs compiled alike; XLA's optimisation passes
# only cost compile time here.
jax.config.update("jax_disable_most_optimizations", True)
if ARGS.cache:
  jax.config.update("jax_compilation_cache_dir", ARGS.cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

from configs import ssl_minicity  # noqa: E402
from sdeseg_jax.data import pipeline  # noqa: E402
from sdeseg_jax.data import streams  # noqa: E402
from sdeseg_jax.train import ssl  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402


def ssl_config():
  """The SSL DepthMix row at CI size: 2 labeled + 2 mixed images a step."""
  config = ssl_minicity.get_config("row=depthmix,runlocal,width=8")
  config.train.update(batch_size=2, num_steps=ARGS.steps, log_every=1,
                      checkpoint_every=ARGS.checkpoint_every,
                      eval_every=ARGS.steps if ARGS.eval else 0,
                      # Panels fetch data-sharded batches with device_get,
                      # which fails across processes: off here.
                      image_every=0)
  config.ssl.unlabeled_batch_size = 2
  config.optim.update(lr=0.02, groups=(("encoder/.*", 0.02),))
  config.eval.update(batch_size=2, num_batches=1)
  if not ARGS.eval:
    config.eval.split = ""
  config.data.tfds_dir = ARGS.tfds
  for k in ("labeled", "unlabeled", "val", "val_full"):
    config.data[k].path = ARGS.data
  return config


class _Shards:
  """The concatenated batches of every process shard of one stream."""

  def __init__(self, datasets):
    self.its = [iter(d) for d in datasets]

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.its]
    return jax.tree.map(lambda *x: np.concatenate(x), *parts)

  def get_state(self):
    return {str(i): it.get_state() for i, it in enumerate(self.its)}

  def set_state(self, state):
    for i, it in enumerate(self.its):
      it.set_state(state[str(i)])


def read_shards(n):
  """Makes one process read the ``n`` shards of an ``n``-process run."""
  make = pipeline.make_dataset

  def make_dataset(stream, **kw):
    if kw.get("process_index") is not None:
      return make(stream, **kw)
    out = [make(stream, **kw, process_index=i, process_count=n)
           for i in range(n)]
    return _Shards([o[0] for o in out]), out[0][1], out[0][2]
  pipeline.make_dataset = make_dataset


def record_metrics(workdir, pid):
  """Appends every step's metrics to ``metrics_p<pid>.jsonl``."""
  jit = step_lib.jit_train_step
  path = os.path.join(workdir, f"metrics_p{pid}.jsonl")

  def jit_train_step(*a, **kw):
    fn = jit(*a, **kw)

    def step(state, batch):
      state, metrics = fn(state, batch)
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      m["step"] = int(jax.device_get(state.step))
      with open(path, "a") as f:
        f.write(json.dumps(m) + "\n")
      return state, metrics
    return step
  step_lib.jit_train_step = jit_train_step


def die_at(step, workdir, every):
  """SIGKILLs this process when it fetches the batch of ``step``."""
  ckpt = os.path.join(workdir, "checkpoints",
                      str((step - 1) // every * every))
  calls = [0]
  cls = streams.NamedIterators

  class Dying(cls):
    def __next__(self):
      calls[0] += 1
      if calls[0] == step:
        deadline = time.time() + 120
        while not os.path.isdir(ckpt) and time.time() < deadline:
          time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
      return super().__next__()
  streams.NamedIterators = Dying


def main():
  os.makedirs(ARGS.workdir, exist_ok=True)
  if ARGS.num_processes == 1 and ARGS.shards > 1:
    read_shards(ARGS.shards)
  record_metrics(ARGS.workdir, jax.process_index())
  if ARGS.die_at_step:
    die_at(ARGS.die_at_step, ARGS.workdir, ARGS.checkpoint_every)
  ssl.run(ssl_config(), ARGS.workdir)
  print("WORKER DONE", jax.process_index(), flush=True)


if __name__ == "__main__":
  main()
