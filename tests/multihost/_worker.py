"""One process of a multi-host (or the one-process reference) training run.

Started by ``tests/multihost/multihost_test.py``, never by pytest itself:

  python tests/multihost/_worker.py --data=D --source=S --pseudo=P \
      --workdir=W --num_processes=2 --process_id=I --port=P  # one of two
  python tests/multihost/_worker.py --data=D --source=S --pseudo=P \
      --workdir=W --shards=2                                 # the reference

Each process of a multi-host run has one CPU device and calls
``jax.distributed.initialize`` on 127.0.0.1 as ``main.py --distributed``
does (gloo CPU collectives). The reference is one process with ``--shards``
devices whose loaders read, and concatenate, the per-process shards that
the ``--shards`` processes of a multi-host run read; so both see the same
global batches and must reach the same state.

One process trains the modes of ``--modes`` one after the other, each in
``<workdir>/<mode>`` (one start and one JAX initialisation for all of
them): ``ssda`` is the MiniCity SSDA row ``cdm_tdm_mgs`` (source CE,
cross-domain and target-domain DepthMix with the mean teacher, Matching
Geometry Sampling), ``ssl`` the MiniCity SSL DepthMix row; both evaluate
and write image panels at the last step.

Every step's metrics are appended to ``<workdir>/<mode>/metrics_p<I>.jsonl``.
``--sigterm_at_step=N``: this process sends itself SIGTERM when fetching
the SSDA batch of step N (a preemption notice to every worker of the job:
the trainer finishes the step, saves and returns). ``--die_at_step=N``:
this process SIGKILLs itself when fetching the SSL batch of step N, once
the checkpoint before it is on disk (a worker lost mid-run).
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
  p.add_argument("--data", required=True,
                 help="generated MiniCity, cityscapes layout")
  p.add_argument("--source", required=True,
                 help="generated MiniCity, gta5 layout (SSDA source)")
  p.add_argument("--pseudo", required=True,
                 help="pseudo-depth folder with target/ and source/")
  p.add_argument("--tfds", required=True)
  p.add_argument("--workdir", required=True)
  p.add_argument("--modes", default="ssda,ssl")
  p.add_argument("--steps", type=int, default=4)
  p.add_argument("--checkpoint_every", type=int, default=2)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--shards", type=int, default=1)
  p.add_argument("--sigterm_at_step", type=int, default=0)
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

from configs import ssda_minicity  # noqa: E402
from configs import ssl_minicity  # noqa: E402
from sdeseg_jax.data import pipeline  # noqa: E402
from sdeseg_jax.data import streams  # noqa: E402
from sdeseg_jax.train import ssda  # noqa: E402
from sdeseg_jax.train import ssl  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402


def _common(config):
  config.train.update(num_steps=ARGS.steps, log_every=1,
                      checkpoint_every=ARGS.checkpoint_every,
                      eval_every=ARGS.steps, image_every=ARGS.steps)
  config.eval.update(batch_size=2, num_batches=1, num_images=2)
  config.data.tfds_dir = ARGS.tfds


def ssl_config():
  """The SSL DepthMix row at CI size: 2 labeled + 2 mixed images a step."""
  config = ssl_minicity.get_config("row=depthmix,runlocal,width=8")
  _common(config)
  config.ssl.unlabeled_batch_size = 2
  config.optim.update(lr=0.02, groups=(("encoder/.*", 0.02),))
  for k in ("labeled", "unlabeled", "val", "val_full"):
    config.data[k].path = ARGS.data
  return config


def ssda_config():
  """SSDA row ``cdm_tdm_mgs`` at CI size: 2 target, 2 source pairs (MGS
  from 2 candidates each) and 2 union images a step."""
  config = ssda_minicity.get_config("row=cdm_tdm_mgs,runlocal,val_count=2")
  _common(config)
  config.model.width = 8
  config.ssda.update(batch_target=2, batch_source=2, batch_unlabeled=2,
                     num_candidates=2)
  for k in ("target", "unlabeled", "val"):
    config.data[k].path = ARGS.data
  config.data.source.path = ARGS.source
  config.data.source.pseudo_depth_dir = os.path.join(ARGS.pseudo, "source")
  config.data.unlabeled.pseudo_depth_dir = os.path.join(ARGS.pseudo,
                                                        "target")
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


_RUN = {}  # the mode being trained and its workdir


def record_metrics(pid):
  """Appends every step's metrics to ``<mode workdir>/metrics_p<pid>.jsonl``."""
  jit = step_lib.jit_train_step

  def jit_train_step(*a, **kw):
    fn = jit(*a, **kw)
    path = os.path.join(_RUN["workdir"], f"metrics_p{pid}.jsonl")

    def step(state, batch):
      state, metrics = fn(state, batch)
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      m["step"] = int(jax.device_get(state.step))
      with open(path, "a") as f:
        f.write(json.dumps(m) + "\n")
      return state, metrics
    return step
  step_lib.jit_train_step = jit_train_step


def signal_at(sigterm_step, die_step, every):
  """SIGTERM at the SSDA batch of ``sigterm_step``, SIGKILL at the SSL batch
  of ``die_step`` (after the checkpoint before it is on disk)."""
  cls = streams.NamedIterators

  class Signalling(cls):
    """Counts its own batches: the panel functions open iterators too."""

    def __next__(self):
      self.calls = getattr(self, "calls", 0) + 1
      if _RUN["mode"] == "ssda" and self.calls == sigterm_step:
        os.kill(os.getpid(), signal.SIGTERM)  # handled after this call
      if _RUN["mode"] == "ssl" and self.calls == die_step:
        ckpt = os.path.join(_RUN["workdir"], "checkpoints",
                            str((die_step - 1) // every * every))
        deadline = time.time() + 120
        while not os.path.isdir(ckpt) and time.time() < deadline:
          time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
      return super().__next__()
  streams.NamedIterators = Signalling


def main():
  pid = jax.process_index()
  print(f"WORKER PID {pid} {os.getpid()}", flush=True)
  if ARGS.num_processes == 1 and ARGS.shards > 1:
    read_shards(ARGS.shards)
  record_metrics(pid)
  if ARGS.sigterm_at_step or ARGS.die_at_step:
    signal_at(ARGS.sigterm_at_step, ARGS.die_at_step, ARGS.checkpoint_every)
  runs = {"ssda": (ssda.run, ssda_config), "ssl": (ssl.run, ssl_config)}
  for mode in ARGS.modes.split(","):
    workdir = os.path.join(ARGS.workdir, mode)
    os.makedirs(workdir, exist_ok=True)
    _RUN.update(mode=mode, workdir=workdir)
    t = time.time()
    run, config = runs[mode]
    run(config(), workdir)
    print(f"WORKER MODE DONE {mode} {time.time() - t:.1f}s", flush=True)
  print("WORKER DONE", pid, flush=True)


if __name__ == "__main__":
  main()
