"""Tests of the multi-stream helpers (sdeseg_jax/data/streams.py)."""

import json

from absl.testing import absltest

from sdeseg_jax.data import streams


class _FakeIter:

  def __init__(self, start=0):
    self.i = start

  def __next__(self):
    self.i += 1
    return self.i

  def get_state(self):
    return {"i": self.i}

  def set_state(self, state):
    self.i = state["i"]


class NamedIteratorsTest(absltest.TestCase):

  def test_state_round_trip(self):
    its = streams.NamedIterators(a=_FakeIter(), b=_FakeIter(10))
    self.assertEqual(next(its), {"a": 1, "b": 11})
    state = its.get_state()
    self.assertEqual(json.loads(state), {"a": {"i": 1}, "b": {"i": 11}})
    nxt = next(its)
    fresh = streams.NamedIterators(a=_FakeIter(), b=_FakeIter())
    fresh.set_state(state)
    self.assertEqual(next(fresh), nxt)
    with self.assertRaisesRegex(ValueError, r"lacks streams \['b'\]"):
      fresh.set_state(json.dumps({"a": {"i": 0}}).encode())


if __name__ == "__main__":
  absltest.main()
