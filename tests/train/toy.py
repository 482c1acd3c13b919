"""A tiny task and data pipeline for the engine tests (not collected).

Also runnable as a script (``python tests/train/toy.py WORKDIR NUM_STEPS
[KILL_AFTER_CKPT]``) so tests can train in a subprocess and kill it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from configs import common  # noqa: E402

NUM_EXAMPLES = 64


class ToyNet(nn.Module):
  """Conv + BatchNorm + dropout + dense: exercises params, stats and rng."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(4, (3, 3), name="encoder")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     name="bn")(x)
    x = nn.relu(x)
    x = nn.Dropout(0.2, deterministic=not train)(x)
    x = x.mean(axis=(1, 2))
    return nn.Dense(1, name="head")(x)[:, 0]


class ToyTask:
  """Regression of the per-image mean colour; implements ``step.Task``."""

  def __init__(self):
    self.model = ToyNet()

  def init(self, rng, batch):
    v = self.model.init({"params": rng}, batch["x"], train=False)
    return v["params"], v["batch_stats"]

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    del step
    pred, new = self.model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["x"],
        train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    loss = jnp.mean((pred - batch["y"]) ** 2)
    metrics = {"mse": loss}
    if teacher is not None:
      metrics["teacher_head"] = jnp.sum(teacher[0]["head"]["bias"])
    return loss, (new["batch_stats"], metrics)


class _Example(grain.transforms.Map):
  """Index -> deterministic synthetic example."""

  def map(self, i):
    rs = np.random.RandomState(int(i))
    x = rs.uniform(size=(8, 8, 3)).astype(np.float32)
    return {"x": x, "y": np.float32(x.mean() * 3.0 - 1.0)}


class _KillAfter(grain.transforms.Map):
  """SIGKILLs the process when it must build batch ``n`` and checkpoint
  ``ckpt_step`` is complete: simulates a crash right after a checkpoint."""

  def __init__(self, n, workdir, ckpt_step):
    self.n, self.workdir, self.ckpt_step = n, workdir, ckpt_step
    self.count = 0

  def map(self, batch):
    self.count += 1
    if self.count > self.n:
      path = os.path.join(self.workdir, "checkpoints", str(self.ckpt_step))
      deadline = time.time() + 120
      while not os.path.isdir(path) and time.time() < deadline:
        time.sleep(0.05)
      time.sleep(0.5)  # let orbax finish its metadata writes
      os.kill(os.getpid(), signal.SIGKILL)
    return batch


def dataset(batch_size=8, seed=0, kill=None):
  """Infinite shuffled grain MapDataset of toy batches."""
  ds = (grain.MapDataset.range(NUM_EXAMPLES).seed(seed).shuffle().repeat()
        .map(_Example()).batch(batch_size, drop_remainder=True))
  if kill is not None:
    ds = ds.map(_KillAfter(*kill))
  return ds


def train_iter(batch_size=8, seed=0, kill=None):
  return iter(dataset(batch_size, seed, kill).to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def example_batch(batch_size=8):
  return dataset(batch_size)[0]


def config(num_steps=6, **train):
  c = mlc.ConfigDict()
  c.train = common.train_config(
      num_steps=num_steps, batch_size=8, log_every=2, eval_every=0,
      image_every=0, checkpoint_every=3, max_to_keep=5)
  c.train.update(train)
  c.optim = common.optim_config(
      name="sgd", lr=0.05, weight_decay=1e-4, clip_norm=10.0)
  return c


def main(argv):
  from sdeseg_jax.train import trainer  # pylint: disable=g-import-not-at-top
  workdir, num_steps = argv[1], int(argv[2])
  kill = None
  if len(argv) > 3:
    ckpt_step = int(argv[3])
    kill = (ckpt_step + 1, workdir, ckpt_step)
  state = trainer.fit(config(num_steps), workdir, task=ToyTask(),
                      train_iter=train_iter(kill=kill),
                      example_batch=example_batch())
  np.savez(os.path.join(workdir, "final.npz"),
           *[np.asarray(x) for x in jax.tree.leaves(
               (state.params, state.batch_stats, state.opt_state))])


if __name__ == "__main__":
  main(sys.argv)
