"""Tests of ``benchmarks/_report.py`` (shared benchmark output helpers)."""

import contextlib
import io
import json
import os
import sys

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import _report  # noqa: E402


def _printed(fn, *args, **kw):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    fn(*args, **kw)
  return out.getvalue().splitlines()


class ReportTest(absltest.TestCase):

  def test_table_aligns_names_numbers_and_preformatted_cells(self):
    lines = _printed(
        _report.table,
        [("row", 6, ""), ("mIoU", 14, ""), ("vs a", 8, "+.2f"),
         ("n", 4, "d")],
        [("a", _report.pm([1.0, 3.0], 5, 4), 0.0, 3),
         ("bb", _report.pm([2.0, 2.0], 5, 4), -1.5, 12)])
    self.assertEqual(lines, ["row              mIoU     vs a    n",
                             "a        2.00 +- 1.00    +0.00    3",
                             "bb       2.00 +- 0.00    -1.50   12"])

  def test_mean_std_is_population_std(self):
    self.assertEqual(_report.mean_std([1, 2, 3, 4]),
                     (2.5, float(np.sqrt(1.25))))
    self.assertEqual(_report.pm([41.0, 41.7]), " 41.35 +-  0.35")

  def test_print_fields_and_emit_json(self):
    res = {"benchmark": "x", "times": [1, 2], "n": 3}
    self.assertEqual(_printed(_report.print_fields, res, skip=("times",),
                              width=10),
                     [" benchmark: x", "         n: 3"])
    self.assertEqual(json.loads(_printed(_report.emit_json, res)[-1]), res)

  def test_parser_description_and_step_cost_args(self):
    p = _report.parser("First line.\n\nUsage ...")
    self.assertEqual(p.description, "First line.")
    self.assertIn("Usage", _report.parser("a\nUsage", first_line=False)
                  .description)
    _report.add_step_cost_args(p, batch=3, steps=7, image_size=False)
    a = _report.parse(p, ["--depth", "18"])
    self.assertEqual((a.depth, a.batch, a.steps, a.dtype, a.remat),
                     (18, 3, 7, "float32", "none"))
    with self.assertRaises(SystemExit):  # not a remat policy
      _report.parse(p, ["--remat", "all"])
    # The choices are the models' policies (listed there without importing
    # flax, so that --help stays fast).
    from sdeseg_jax.models import layers  # pylint: disable=g-import-not-at-top
    choices = [a.choices for a in p._actions if a.dest == "remat"][0]
    self.assertEqual(tuple(choices), layers.REMAT_POLICIES)
    self.assertFalse(hasattr(a, "height"))

  def test_time_steps_threads_state_and_skips_warmup(self):
    step = jax.jit(lambda s, b: (s + b, {"s": s + b}))
    state, metrics, times = _report.time_steps(step, jnp.zeros(()), 1.0,
                                               steps=3, warmup=2)
    self.assertEqual(float(state), 5.0)   # 2 warm-up + 3 timed steps
    self.assertEqual(float(metrics["s"]), 5.0)
    self.assertLen(times, 3)
    self.assertTrue(all(t >= 0 for t in times))

  def test_memory_and_params(self):
    compiled, secs = _report.compile_timed(jax.jit(lambda x: x * 2),
                                           jnp.zeros((256, 256)))
    self.assertGreaterEqual(secs, 0.0)
    mem = _report.memory_mib(compiled)
    self.assertEqual(sorted(mem), ["flops", "mem_argument_mib",
                                   "mem_argument_plus_temp_mib",
                                   "mem_generated_code_mib",
                                   "mem_output_mib", "mem_temp_mib",
                                   "peak_device_mib"])
    self.assertEqual(mem["mem_argument_mib"], 0.2)  # 256 KiB
    self.assertEqual(mem["flops"], 256 * 256)       # one multiply each
    self.assertIsNone(mem["peak_device_mib"])       # CPU: not tracked

  def test_biggest_buffers_names_the_source_op(self):
    def f(x):
      big = jnp.outer(x, x)        # 1024 x 1024 f32: 4 MiB
      return jnp.sum(jnp.sin(big), axis=0)
    compiled = jax.jit(f).lower(jnp.zeros((1024,))).compile()
    bufs = _report.biggest_buffers(compiled, 2)
    self.assertLen(bufs, 2)
    self.assertGreaterEqual(bufs[0]["mib"], bufs[1]["mib"])
    self.assertEqual(bufs[0]["shape"], "f32[1024, 1024]")
    self.assertEqual(bufs[0]["mib"], 4.0)
    self.assertEqual(_report.param_count(
        {"a": jax.ShapeDtypeStruct((3, 4), jnp.float32),
         "b": np.zeros(5)}), 17)

  def test_random_intrinsics(self):
    k = _report.random_intrinsics(32, 64)
    self.assertEqual(k.dtype, np.float32)
    np.testing.assert_allclose(k, [[70.4, 0, 32, 0], [0, 70.4, 16, 0],
                                   [0, 0, 1, 0], [0, 0, 0, 1]], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
