"""SSDA stopped mid-run (SIGTERM) and resumed equals an uninterrupted run,
bitwise, on the whole state: parameters, BatchNorm statistics, optimiser,
mean teacher, PRNG key and step (the other resume test resumes a finished
run). Row ``cdm_tdm_mgs``: source CE, cross-domain and target-domain
DepthMix with the teacher, Matching Geometry Sampling."""

import tempfile

from absl.testing import absltest
import grain
import jax
import numpy as np

from configs import ssda_minicity
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import ssda
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding
from tests import _fixtures
from tests.train import engine_test
from tests.train import ssda_test

_STEPS = 4
# Both runs compile alike, so the bitwise comparison holds without XLA's
# optimisation passes (which take most of the compile time on a CPU).
setUpModule, tearDownModule = _fixtures.module_cheap_compiles()


def _config():
  config = ssda_minicity.get_config("row=cdm_tdm_mgs,runlocal")
  config.model.width = 8
  b = ssda_test.B
  config.ssda.update(batch_target=b, batch_source=b, batch_unlabeled=b,
                     num_candidates=ssda_test.K)
  config.train.update(num_steps=_STEPS, checkpoint_every=100, log_every=1)
  return config


class _Batch(grain.transforms.Map):
  """Batch ``i`` of a synthetic SSDA stream (deterministic in ``i``)."""

  def map(self, i):
    rng = np.random.default_rng(int(i))
    b, h, w = ssda_test.B, ssda_test.H, ssda_test.W
    target_pd = rng.uniform(0.1, 0.9, (b, h, w)).astype(np.float32)
    source_pd = rng.uniform(0.1, 0.9, (b, ssda_test.K, h, w))
    return ssda_test._batch(rng, target_pd, source_pd.astype(np.float32))  # pylint: disable=protected-access


def _iter(sigterm_at=None):
  ds = grain.MapDataset.range(1000).map(_Batch())
  if sigterm_at is not None:
    ds = ds.map(engine_test._SigtermAt(sigterm_at))  # pylint: disable=protected-access
  return iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def _fit(config, workdir, it):
  return trainer.fit(config, workdir, task=ssda.SSDATask(config),
                     train_iter=it, example_batch=_Batch().map(0),
                     mesh=sharding.make_mesh(jax.devices()[:1]))


def _whole_state(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


class SSDAResumeTest(absltest.TestCase):

  def test_sigterm_mid_run_then_resume_is_bitwise_exact(self):
    config = _config()
    ref = _fit(config, tempfile.mkdtemp(), _iter())
    self.assertEqual(int(ref.step), _STEPS)
    self.assertIsNotNone(ref.ema_params)  # the teacher is part of the check
    workdir = tempfile.mkdtemp()
    # SIGTERM while fetching batch 3: step 3 finishes, saves and stops.
    stopped = _fit(config, workdir, _iter(sigterm_at=3))
    self.assertEqual(int(stopped.step), 3)
    self.assertEqual(ckpt_lib.Checkpointer(workdir).all_steps(), [3])
    # A fresh iterator: its position comes back from the checkpoint.
    resumed = _fit(config, workdir, _iter())
    self.assertEqual(int(resumed.step), _STEPS)
    a, b = _whole_state(ref), _whole_state(resumed)
    self.assertLen(b, len(a))
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    # Training moved the state (so the equality is not vacuous).
    self.assertFalse(all(np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(jax.device_get(stopped.params)),
        jax.tree.leaves(jax.device_get(ref.params)))))


if __name__ == "__main__":
  absltest.main()
