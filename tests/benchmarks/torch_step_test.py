"""Tests of ``benchmarks/torch_step.py``: its torch monodepth2 loss equals the
project's, its pose transforms invert, and its tiny torch step trains."""

import os
import sys

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import torch_step  # noqa: E402

from configs import common  # noqa: E402
from sdeseg_jax.losses import monodepth  # noqa: E402


def _nchw(a):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))


class TorchStepTest(absltest.TestCase):

  def test_transform_and_its_inverse_compose_to_identity(self):
    g = torch.Generator().manual_seed(0)
    aa = 0.3 * torch.randn(3, 3, generator=g)
    t = torch.randn(3, 3, generator=g)
    m = torch_step.transformation_from_parameters(aa, t)
    mi = torch_step.transformation_from_parameters(aa, t, invert=True)
    np.testing.assert_allclose((mi @ m).numpy(),
                               np.broadcast_to(np.eye(4), (3, 4, 4)),
                               atol=1e-5)
    # A rotation: orthonormal with determinant 1.
    r = m[:, :3, :3]
    np.testing.assert_allclose((r @ r.transpose(1, 2)).numpy(),
                               np.broadcast_to(np.eye(3), (3, 3, 3)),
                               atol=1e-5)

  def test_torch_monodepth_loss_equals_ours(self):
    rs = np.random.RandomState(0)
    b, h, w = 2, 24, 32
    color = rs.uniform(size=(b, 3, h, w, 3)).astype(np.float32)
    disps = {s: rs.uniform(0.05, 0.9, size=(b, h >> s, w >> s, 1)).astype(
        np.float32) for s in range(4)}
    pyramid = {s: rs.uniform(size=(b, h >> s, w >> s, 3)).astype(np.float32)
               for s in (1, 2, 3)}
    k = np.repeat(
        np.array([[0.6 * w, 0, w / 2, 0], [0, 1.2 * h, h / 2, 0],
                  [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)[None], b, 0)
    inv_k = np.linalg.inv(k).astype(np.float32)
    aa = torch.from_numpy(0.02 * rs.normal(size=(b, 3)).astype(np.float32))
    tr = torch.from_numpy(0.1 * rs.normal(size=(b, 3)).astype(np.float32))
    poses = {f: torch_step.transformation_from_parameters(aa, f * tr,
                                                          invert=f < 0)
             for f in (-1, 1)}
    got = torch_step.monodepth_loss(
        {s: _nchw(d) for s, d in disps.items()},
        {f: _nchw(color[:, i]) for i, f in enumerate((-1, 0, 1))},
        {s: _nchw(p) for s, p in pyramid.items()}, poses,
        torch.from_numpy(k), torch.from_numpy(inv_k), noise=False)
    want, _ = monodepth.monodepth_loss_with_noise(
        {s: jnp.asarray(d) for s, d in disps.items()}, jnp.asarray(color),
        {s: jnp.asarray(p) for s, p in pyramid.items()},
        {f: jnp.asarray(p.numpy()) for f, p in poses.items()},
        jnp.asarray(k), jnp.asarray(inv_k), None, common.sde_loss_config())
    self.assertGreater(float(want), 0.05)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-4)

  def test_tiny_torch_sde_and_ssl_steps_lower_the_loss(self):
    import step_cost  # pylint: disable=g-import-not-at-top
    import step_cost_ssl  # pylint: disable=g-import-not-at-top
    host = step_cost.sde_batch(2, 32, 64)
    ssl_host = step_cost_ssl.ssl_batch(2, 32, 64)["labeled"]
    for kind, data in (("sde", host), ("ssl", ssl_host)):
      step = torch_step.TorchStep(kind, 18, 8, torch_step.torch_inputs(data),
                                  lr=1e-3 if kind == "sde" else 1e-2)
      losses = [step.step() for _ in range(6)]
      self.assertTrue(np.all(np.isfinite(losses)), (kind, losses))
      self.assertLess(losses[-1], losses[0], (kind, losses))


if __name__ == "__main__":
  absltest.main()
