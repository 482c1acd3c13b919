"""bfloat16 compute (``config.model.dtype="bfloat16"``): short MiniCity SDE and
SSL runs track the float32 runs, and the parts that must stay float32 do.

The policy (``models/layers.py``): convolutions run in the compute dtype;
parameters, optimiser state and BatchNorm statistics are float32 (BN
normalises in float32); the model's outputs (disparities, logits, poses) come
back as float32, so the geometry (back-projection, warping), the photometric
and smoothness losses, softmax and cross-entropy all run in float32. The test
reads the dtypes off the training step's jaxpr.
"""

import os
import sys
import tempfile

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import sde_minicity  # noqa: E402
from configs import ssl_minicity  # noqa: E402
from sdeseg_jax.data import pipeline  # noqa: E402
from sdeseg_jax.train import sde  # noqa: E402
from sdeseg_jax.train import ssl  # noqa: E402
from sdeseg_jax.train import step as step_lib  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding  # noqa: E402
from tests import _fixtures  # noqa: E402

_STEPS = 8
# Largest relative gap between the bf16 and fp32 loss at any step of these
# short runs (bf16 keeps 8 bits of mantissa: ~0.4 % per rounding).
_LOSS_RTOL = 0.05
# Ops that must see float32 operands: softmax / log-softmax / CE (exp, log,
# reduce_max), BN (rsqrt), SSIM and the photometric min (sqrt, argmin,
# reduce_min), the warp's bilinear sampling (gather) and the disparity
# sigmoid (logistic).
_FP32_OPS = ("exp", "log", "log1p", "reduce_max", "reduce_min", "argmin",
             "argmax", "rsqrt", "sqrt", "gather", "logistic")
_CACHE = {}
# The assertions are tolerances between runs (and dtypes of the jaxpr),
# which XLA's optimisation passes do not change.
setUpModule, tearDownModule = _fixtures.module_cheap_compiles()


def _data():
  if "data" not in _CACHE:
    tmp, root, tfds_dir = _fixtures.generate_minicity(4, 1)
    _CACHE["data"] = (root, tfds_dir)
  return _CACHE["data"]


def _sde_config(dtype):
  config = sde_minicity.get_config("runlocal")
  config.model.update(encoder_depth=10, width=8, pose_depth=10, dtype=dtype)
  config.optim.update(lr=2e-3, schedule="constant")
  config.loss.scales = (0, 1)
  return config


def _ssl_config(dtype):
  config = ssl_minicity.get_config("row=depthmix,runlocal,width=8")
  config.model.dtype = dtype
  config.train.batch_size = 2
  config.ssl.unlabeled_batch_size = 2
  config.optim.update(lr=0.02, groups=(("encoder/.*", 0.02),))
  root, _ = _data()
  for k in ("labeled", "unlabeled", "val", "val_full"):
    config.data[k].path = root
  return config


def _batches(mode):
  key = ("batches", mode)
  if key not in _CACHE:
    root, tfds_dir = _data()
    if mode == "sde":
      config = _sde_config("float32")
      stream = mlc.ConfigDict(config.data.val.to_dict())
      stream.path = root
      loader = pipeline.make_loader(
          stream, split="train", global_batch_size=2, seed=0, train=False,
          data_dir=tfds_dir)
      b = next(iter(loader))
      loader.close()
      _CACHE[key] = [jax.device_get(b)] * _STEPS
    else:
      its = ssl.make_train_iterators(_ssl_config("float32"), root, tfds_dir)
      _CACHE[key] = [jax.device_get(next(its)) for _ in range(_STEPS)]
      its.close()
  return _CACHE[key]


def _task(mode, dtype):
  config = (_sde_config if mode == "sde" else _ssl_config)(dtype)
  task = (sde.SDETask if mode == "sde" else ssl.SSLTask)(config)
  return task, config


def _run(mode, dtype):
  task, config = _task(mode, dtype)
  batches = _batches(mode)
  mesh = sharding.make_mesh(jax.devices()[:1])
  create = trainer.create_state_fn(task, config,
                                   trainer.abstract_batch(batches[0]))
  shapes = jax.eval_shape(create)
  state = jax.jit(create, out_shardings=step_lib.state_sharding(
      shapes, mesh))()
  jstep = step_lib.jit_train_step(task, config, mesh, shapes)
  losses = []
  for b in batches:
    state, m = jstep(state, sharding.host_to_global(b, mesh))
    losses.append(float(m["loss"]))
  return np.array(losses), jax.device_get(state)


def _eqns(jaxpr):
  """Every equation of ``jaxpr`` and of the jaxprs nested in it."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          yield from _eqns(sub.jaxpr)  # ClosedJaxpr
        elif hasattr(sub, "eqns"):
          yield from _eqns(sub)


def _dtypes(eqn):
  return {str(v.aval.dtype) for v in eqn.invars if hasattr(v, "aval")}


class BFloat16Test(absltest.TestCase):

  def _tracks(self, mode):
    ref, ref_state = _run(mode, "float32")
    got, state = _run(mode, "bfloat16")
    self.assertTrue(np.isfinite(got).all(), got)
    gap = np.abs(got - ref) / np.abs(ref)
    self.assertLess(gap.max(), _LOSS_RTOL, (mode, ref, got))
    # Not the same run: bf16 does round.
    self.assertGreater(gap.max(), 1e-6, (mode, ref, got))
    for tree in (state.params, state.batch_stats, state.opt_state):
      for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
          self.assertEqual(leaf.dtype, jnp.float32)
    return ref, got

  def test_sde_run_tracks_float32(self):
    ref, got = self._tracks("sde")
    # One sequence, repeated: both runs learn it.
    self.assertLess(ref[-1], ref[0])
    self.assertLess(got[-1], got[0])

  def test_ssl_run_tracks_float32(self):
    self._tracks("ssl")

  def test_step_computes_convolutions_in_bf16_and_the_rest_in_fp32(self):
    for mode in ("sde", "ssl"):
      task, config = _task(mode, "bfloat16")
      batch = _batches(mode)[0]
      create = trainer.create_state_fn(task, config,
                                       trainer.abstract_batch(batch))
      shapes = jax.eval_shape(create)
      jaxpr = jax.make_jaxpr(
          lambda s, b: step_lib.train_step(s, b, task=task, config=config))(
              shapes, batch)
      eqns = list(_eqns(jaxpr.jaxpr))
      convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
      net = [e for e in convs if "bfloat16" in _dtypes(e)]
      self.assertGreater(len(net), 10, mode)
      # The only float32 convolutions are the strong augmentation's blur of
      # the images (depthwise: one group per image channel).
      other = [e for e in convs if e not in net]
      for e in other:
        self.assertEqual(_dtypes(e), {"float32"}, mode)
        groups = e.params["feature_group_count"]
        self.assertGreater(groups, 1, mode)
        self.assertEqual(groups, e.invars[0].aval.shape[-1], mode)
      self.assertLess(len(other), len(net) // 4, mode)
      seen = {}
      for e in eqns:
        if e.primitive.name in _FP32_OPS:
          seen.setdefault(e.primitive.name, set()).update(_dtypes(e))
      # The float32-only ops occur (the check is not vacuous): BN, and the
      # warp and min-reprojection (SDE) or softmax / cross-entropy (SSL).
      want = (("rsqrt", "gather", "argmin", "logistic") if mode == "sde"
              else ("rsqrt", "exp", "log", "reduce_max"))
      for op in want:
        self.assertIn(op, seen, mode)
      # ... and never on bfloat16 values.
      bad = {op: d for op, d in seen.items() if "bfloat16" in d}
      self.assertEqual(bad, {}, mode)


if __name__ == "__main__":
  absltest.main()
