"""A tiny trained SSL run shared by the predict / evaluate tests.

``tiny_run`` trains the MiniCity ``ssl_minicity:row=baseline,runlocal`` net
(ResNet-10 of width 8, transfer head plus a depth decoder, EMA teacher) for
2 steps on a 64x32 MiniCity, checkpointing and evaluating at steps 1 and 2,
once per test session.
"""

import dataclasses
import os
import shutil
import tempfile

import pytest

from tests import _fixtures


@dataclasses.dataclass(frozen=True)
class TinyRun:
  workdir: str   # the training run
  data: str      # its MiniCity (cityscapes layout)
  tfds_dir: str
  config: object


def tiny_config(data, tfds_dir):
  config = _fixtures.load_config("ssl_minicity", "row=baseline,runlocal",
                                 lock=False)
  config.model.depth = True          # a depth head: disparity outputs too
  config.train.update(num_steps=2, eval_every=1, checkpoint_every=1,
                      image_every=0, log_every=1, batch_size=4,
                      use_ema=True, teacher_batch_stats="ema")
  config.eval.update(batch_size=4, num_batches=0)
  config.data.tfds_dir = tfds_dir
  for k in ("labeled", "unlabeled", "val", "val_full"):
    config.data[k].path = data
  return config


@pytest.fixture(scope="session")
def tiny_run():
  from sdeseg_jax.train import ssl  # pylint: disable=g-import-not-at-top
  tmp, data, tfds_dir = _fixtures.generate_minicity(4, 2)
  config = tiny_config(data, tfds_dir)
  workdir = os.path.join(tmp, "run")
  with _fixtures.cheap_compiles():
    ssl.run(config, workdir)
  yield TinyRun(workdir, data, tfds_dir, config)
  shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def out_dir():
  d = tempfile.mkdtemp()
  yield d
  shutil.rmtree(d, ignore_errors=True)
