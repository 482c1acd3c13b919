"""Tests of learning-rate groups, freezing, schedules and torch parity."""

import os
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import common  # noqa: E402
from sdeseg_jax.train import optim  # noqa: E402


def _params():
  rs = np.random.RandomState(0)
  mk = lambda *s: jnp.asarray(rs.normal(size=s).astype(np.float32))
  return {"encoder": {"conv": {"kernel": mk(3, 3, 2, 4), "bias": mk(4)}},
          "pose": {"dense": {"kernel": mk(4, 6)}},
          "depth": {"out": {"kernel": mk(4, 1), "bias": mk(1)}}}


def _grads(params, seed):
  rs = np.random.RandomState(seed)
  return jax.tree.map(
      lambda p: jnp.asarray(rs.normal(size=p.shape).astype(np.float32)),
      params)


class OptimTest(parameterized.TestCase):

  def test_labels_first_match_wins_and_typos_are_errors(self):
    groups = (("encoder/.*", "frozen"), (".*/kernel", 1e-3))
    labels = optim.param_labels(groups, _params())
    self.assertEqual(labels["encoder"]["conv"]["kernel"], "frozen")
    self.assertEqual(labels["pose"]["dense"]["kernel"], "group1")
    self.assertEqual(labels["depth"]["out"]["bias"], "base")
    with self.assertRaisesRegex(ValueError, r"groups\[0\].*'encodr/\.\*'"):
      optim.param_labels((("encodr/.*", 1.0),), _params())
    with self.assertRaisesRegex(ValueError, "must be a number or 'frozen'"):
      optim.param_labels((("pose/.*", "fast"),), _params())

  def test_frozen_unchanged_groups_use_their_lr(self):
    cfg = common.optim_config(
        name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
        groups=(("encoder/.*", "frozen"), ("pose/.*", 1e-3)))
    tx = optim.make_optimizer(cfg)
    params = _params()
    state = tx.init(params)
    new = params
    for seed in range(3):
      grads = _grads(params, seed)
      updates, state = tx.update(grads, state, new)
      upd = jax.tree.map(lambda u: np.asarray(u), updates)
      np.testing.assert_allclose(upd["pose"]["dense"]["kernel"],
                                 -1e-3 * grads["pose"]["dense"]["kernel"],
                                 rtol=1e-6)
      np.testing.assert_allclose(upd["depth"]["out"]["kernel"],
                                 -0.1 * grads["depth"]["out"]["kernel"],
                                 rtol=1e-6)
      new = optax.apply_updates(new, updates)
    jax.tree.map(np.testing.assert_array_equal, new["encoder"],
                 params["encoder"])
    self.assertFalse(np.array_equal(new["pose"]["dense"]["kernel"],
                                    params["pose"]["dense"]["kernel"]))

  def test_clipping_ignores_frozen_gradients(self):
    cfg = common.optim_config(name="sgd", lr=1.0, momentum=0.0,
                              clip_norm=1.0,
                              groups=(("encoder/.*", "frozen"),))
    tx = optim.make_optimizer(cfg)
    params = _params()
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["encoder"]["conv"]["kernel"] += 100.0  # frozen: must not count
    grads["depth"]["out"]["bias"] += 0.5          # norm 0.5 < 1: unclipped
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["depth"]["out"]["bias"], [-0.5])
    grads["depth"]["out"]["bias"] = jnp.full((1,), 4.0)  # norm 4: clip to 1
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["depth"]["out"]["bias"], [-1.0],
                               rtol=1e-6)

  @parameterized.parameters(
      dict(schedule="step", step_size=3),
      dict(schedule="multistep", milestones=(2, 5)))
  def test_schedules_match_torch(self, **kw):
    torch = __import__("pytest").importorskip("torch")
    cfg = common.optim_config(name="sgd", lr=0.5, gamma=0.1, **kw)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = {
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, 3, gamma=0.1),
        "multistep": lambda: torch.optim.lr_scheduler.MultiStepLR(
            opt, [2, 5], gamma=0.1),
    }[kw["schedule"]]()
    for count in range(10):
      # Reference loop: optimizer.step() with the current lr, then
      # scheduler.step(); our update number `count` must use that lr.
      torch_lr = opt.param_groups[0]["lr"]
      self.assertAlmostEqual(optim.learning_rates(cfg, count)["base"],
                             torch_lr, places=6, msg=f"count {count}")
      opt.step()
      sched.step()

  def test_poly_and_constant_by_hand(self):
    # poly: lr * (1 - min(k, 8) / 8) ** 0.9, worked out by hand.
    cfg = common.optim_config(name="sgd", lr=0.5, schedule="poly",
                              decay_steps=8, poly_power=0.9)
    for count, want in ((0, 0.5), (4, 0.5 * 0.5 ** 0.9),
                        (6, 0.5 * 0.25 ** 0.9), (8, 0.0), (12, 0.0)):
      self.assertAlmostEqual(optim.learning_rates(cfg, count)["base"], want,
                             places=6, msg=f"count {count}")
    self.assertAlmostEqual(0.5 * 0.5 ** 0.9, 0.26794, places=5)
    cfg = common.optim_config(name="sgd", lr=0.5, schedule="constant")
    for count in (0, 7, 10_000):
      self.assertEqual(optim.learning_rates(cfg, count)["base"], 0.5)

  @parameterized.parameters("sgd", "adam")
  def test_update_matches_torch_optimizer(self, name):
    torch = __import__("pytest").importorskip("torch")
    cfg = common.optim_config(name=name, lr=0.1, momentum=0.9,
                              weight_decay=5e-4, schedule="step",
                              step_size=2, gamma=0.5)
    rs = np.random.RandomState(1)
    w0 = rs.normal(size=(5,)).astype(np.float32)
    grads = [rs.normal(size=(5,)).astype(np.float32) for _ in range(5)]
    p = torch.nn.Parameter(torch.tensor(w0))
    if name == "sgd":
      opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
      opt = torch.optim.Adam([p], lr=0.1, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)
    tx = optim.make_optimizer(cfg)
    w = {"w": jnp.asarray(w0)}
    state = tx.init(w)
    for g in grads:
      p.grad = torch.tensor(g)
      opt.step()
      sched.step()
      upd, state = tx.update({"w": jnp.asarray(g)}, state, w)
      w = optax.apply_updates(w, upd)
    np.testing.assert_allclose(np.asarray(w["w"]), p.detach().numpy(),
                               rtol=1e-5, atol=1e-6)

  def test_bad_names_are_clear_errors(self):
    with self.assertRaisesRegex(ValueError, "config.optim.schedule='cosine'"):
      optim.make_optimizer(common.optim_config(schedule="cosine"))
    with self.assertRaisesRegex(ValueError, "config.optim.name='rmsprop'"):
      optim.make_optimizer(common.optim_config(name="rmsprop"))


if __name__ == "__main__":
  absltest.main()
