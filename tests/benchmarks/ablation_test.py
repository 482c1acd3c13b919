"""Tests of ``benchmarks/_ablation.py`` (paired ablation tables)."""

import contextlib
import io
import json
import os
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import _ablation  # noqa: E402


def _pairing(subset=("a.png", "b.png"), **init):
  """A pairing record; ``init`` maps a path to ``(shape, hash)``."""
  return {"subset": list(subset),
          "init": {k: [list(s), h] for k, (s, h) in init.items()}}


class StatsTest(parameterized.TestCase):

  # Two-sided 95% (and one 90%) critical values of Student's t, as printed
  # in the usual tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
  @parameterized.parameters((1, 0.95, 12.706), (2, 0.95, 4.303),
                            (4, 0.95, 2.776), (9, 0.95, 2.262),
                            (29, 0.95, 2.045), (100, 0.95, 1.984),
                            (4, 0.90, 2.132))
  def test_t_quantile_matches_the_table(self, df, level, value):
    self.assertAlmostEqual(_ablation.t_quantile(df, level), value, places=3)

  def test_t_quantile_rejects_zero_df(self):
    with self.assertRaisesRegex(ValueError, "df >= 1"):
      _ablation.t_quantile(0)

  def test_paired_diff_by_hand(self):
    # Differences 1, 2, 1, 2, 2: mean 1.6, sd sqrt(0.3) = 0.5477, half
    # width 2.776 * 0.5477 / sqrt(5) = 0.680. Seed 5 is only in a.
    a = {0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0, 4: 14.0, 5: 99.0}
    b = {0: 9.0, 1: 10.0, 2: 10.0, 3: 11.0, 4: 12.0}
    p = _ablation.paired_diff(a, b)
    self.assertEqual((p.n, p.seeds), (5, (0, 1, 2, 3, 4)))
    self.assertAlmostEqual(p.mean, 1.6)
    self.assertAlmostEqual(p.std, np.sqrt(0.3))
    self.assertAlmostEqual(p.lo, 0.920, places=3)
    self.assertAlmostEqual(p.hi, 2.280, places=3)
    self.assertEqual(_ablation.verdict(p), _ablation.HOLDS)
    # Unpaired, the rows' spread (sd 1.58) would hide the difference; the
    # pairing cancels it (the point of pairing by seed).
    self.assertGreater(np.std(list(b.values()), ddof=1), 1.0)

  def test_verdicts(self):
    p = _ablation.paired_diff({0: 1.0, 1: 2.0, 2: 1.5}, {0: 3.0, 1: 4.0,
                                                         2: 3.4})
    self.assertEqual(_ablation.verdict(p), "does not hold (reversed)")
    p = _ablation.paired_diff({0: 1.0, 1: 3.0}, {0: 2.0, 1: 2.0})
    self.assertEqual((p.mean, _ablation.verdict(p)), (0.0, "does not hold"))
    p = _ablation.paired_diff({0: 5.0}, {0: 2.0})
    self.assertEqual((p.n, p.mean), (1, 3.0))
    self.assertTrue(np.isnan(p.lo))
    self.assertEqual(_ablation.verdict(p), "does not hold (< 2 seeds)")


class PairingTest(absltest.TestCase):

  def test_fingerprint_sees_values_dtype_and_shape(self):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    fp = _ablation.fingerprint({"enc": {"k": x}, "head": {"b": x[0]}})
    self.assertEqual(sorted(fp), ["['enc']['k']", "['head']['b']"])
    self.assertEqual(fp["['enc']['k']"][0], [2, 3])
    same = _ablation.fingerprint({"enc": {"k": x.copy()}})
    self.assertEqual(same["['enc']['k']"], fp["['enc']['k']"])
    y = x.copy()
    y[1, 2] += 1e-6
    self.assertNotEqual(_ablation.fingerprint({"k": y})["['k']"][1],
                        _ablation.fingerprint({"k": x})["['k']"][1])
    self.assertNotEqual(
        _ablation.fingerprint({"k": x.astype(np.float64)})["['k']"][1],
        _ablation.fingerprint({"k": x})["['k']"][1])

  def test_paired_runs_pass(self):
    enc, head = ([3, 3], "aaaa"), ([3], "bbbb")
    _ablation.check_pairing({
        ("baseline", 0): _pairing(enc=enc, head=head),
        # A part only one row has, or one of another shape, is not shared.
        ("mtl", 0): _pairing(enc=enc, head=([5], "cccc"),
                             pose=([2], "dddd")),
        # Another seed draws other values.
        ("baseline", 1): _pairing(subset=("c.png",), enc=([3, 3], "eeee")),
        ("mtl", 1): _pairing(subset=("c.png",), enc=([3, 3], "eeee"))})

  def test_mismatched_fingerprint_fails_naming_rows_seed_and_path(self):
    with self.assertRaises(_ablation.PairingError) as cm:
      _ablation.check_pairing({
          ("baseline", 0): _pairing(enc=([3, 3], "aaaa"), b=([1], "x")),
          ("baseline", 1): _pairing(enc=([3, 3], "ffff"), b=([1], "x")),
          ("depthmix", 1): _pairing(enc=([3, 3], "aaaa"), b=([1], "x"))})
    msg = str(cm.exception)
    for part in ("seed 1", "'baseline'", "'depthmix'", "1 of their 2 shared",
                 "enc", "ffff vs aaaa"):
      self.assertIn(part, msg)

  def test_different_subset_fails(self):
    with self.assertRaisesRegex(_ablation.PairingError,
                                r"seed 3: rows 'a' and 'b' have different "
                                r"labeled subsets .*only in 'a': \['x.png'\]"):
      _ablation.check_pairing({("a", 3): _pairing(subset=("x.png",)),
                               ("b", 3): _pairing(subset=("y.png",))})


class StoreTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = tempfile.mkdtemp()
    self.regime = {"steps": 10, "labels": 4}

  def _run(self, rows, seeds, *, fail_at=None, pairing=None):
    store = _ablation.RunStore(self.dir, "bench", self.regime)
    calls, logs = [], []

    def train(row, seed):
      if fail_at is not None and len(calls) == fail_at:
        raise KeyboardInterrupt  # killed mid-table
      calls.append((row, seed))
      return {"miou": 10.0 * seed + len(row)}

    _ablation.run_table(
        store, rows, seeds, train=train, log=logs.append,
        pairing=pairing or (lambda r, s: _pairing(enc=([1], f"s{s}"))))
    return store, calls, logs

  def test_resume_runs_only_what_is_missing(self):
    with self.assertRaises(KeyboardInterrupt):
      self._run(["base", "mix"], [0, 1], fail_at=3)
    with open(os.path.join(self.dir, _ablation.STORE_NAME)) as f:
      saved = json.load(f)
    # Seed-major: the first seed is complete when the third run dies.
    self.assertEqual(sorted(saved["runs"]),
                     ["base/seed0", "base/seed1", "mix/seed0"])
    self.assertEqual(saved["regime"], self.regime)
    store, calls, logs = self._run(["base", "mix"], [0, 1])
    self.assertEqual(calls, [("mix", 1)])
    self.assertIn("3 of 4 runs done, 1 to go", logs[0])
    self.assertRegex(logs[1], r"\[4/4\] mix seed 1: starting \(elapsed "
                              r"0:00:0\d, ETA 0:00:0\d\)")
    self.assertIn("[4/4] mix seed 1: mIoU 13.00", logs[2])
    rec = store.get("mix", 1)
    self.assertEqual(rec["pairing"]["init"], {"enc": [[1], "s1"]})
    self.assertGreaterEqual(rec["seconds"], 0.0)
    self.assertEqual(store.values("mix"), {0: 3.0, 1: 13.0})
    # Everything done: nothing runs.
    self.assertEqual(self._run(["base", "mix"], [0, 1])[1], [])

  def test_other_regime_in_the_workdir_fails(self):
    self._run(["base"], [0])
    self.regime = {"steps": 20, "labels": 4}
    with self.assertRaisesRegex(ValueError, "steps: 10 there, 20 now"):
      _ablation.RunStore(self.dir, "bench", self.regime)

  def test_unpaired_run_fails_before_training(self):
    self._run(["base"], [0])
    bad = lambda r, s: _pairing(enc=([1], "other"))
    with self.assertRaisesRegex(_ablation.PairingError,
                                "seed 0: rows 'base' and 'mix'"):
      self._run(["base", "mix"], [0], pairing=bad)
    store = _ablation.RunStore(self.dir, "bench", self.regime)
    self.assertFalse(store.done("mix", 0))

  def test_report_prints_rows_and_orderings(self):
    store = _ablation.RunStore(self.dir, "bench", self.regime)
    for s, (b, m) in enumerate([(10, 11), (12, 14), (11, 12), (13, 15),
                                (14, 16)]):
      store.put("base", s, {"miou": b, "seconds": 1, "pairing": {}})
      store.put("mix", s, {"miou": m, "seconds": 1, "pairing": {}})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      res = _ablation.report(
          store, ["base", "mix", "absent"], "base",
          [_ablation.Ordering("mix", "base", 2.0, "Tab. 1"),
           _ablation.Ordering("base", "mix", None, "text"),
           _ablation.Ordering("absent", "base", 1.0, "Tab. 2")])
    text = out.getvalue()
    self.assertIn(" 12.00 +-  1.58", text)        # base: sample sd
    self.assertIn("+1.60", text)
    self.assertIn("[+0.92, +2.28]", text)
    self.assertIn("paper  +2.00 (Tab. 1); here  +1.60", text)
    self.assertIn("n=5: holds", text)
    self.assertIn("paper    n/a (text)", text)
    self.assertIn("does not hold (reversed)", text)
    self.assertNotIn("absent", text)               # no runs: left out
    self.assertEqual([c["verdict"] for c in res["orderings"]],
                     ["holds", "does not hold (reversed)"])
    self.assertAlmostEqual(res["rows"]["mix"]["delta"], 1.6)
    # The JSON line is standard JSON: a one-seed row has None, not NaN.
    store.put("one", 0, {"miou": 3.0, "seconds": 1, "pairing": {}})
    with contextlib.redirect_stdout(io.StringIO()) as out:
      res = _ablation.report(store, ["base", "one"], "base", [])
    self.assertIn("  3.00 +-     -", out.getvalue())
    self.assertEqual((res["rows"]["one"]["std"],
                      res["rows"]["one"]["delta_ci"]), (None, [None, None]))
    json.loads(json.dumps(res, allow_nan=False))


if __name__ == "__main__":
  absltest.main()


class RegimeTest(absltest.TestCase):
  """The two benchmarks' regimes (no training)."""

  def test_legacy_keeps_the_documented_settings_and_flags_override(self):
    import ssda_minicity  # pylint: disable=g-import-not-at-top
    import ssl_minicity  # pylint: disable=g-import-not-at-top
    a = ssl_minicity.parse_args(["--regime=legacy"])
    self.assertEqual(
        (a.rows, a.seeds, a.steps, a.labels, a.sequences, a.crop, a.lr,
         a.sde_steps),
        ("baseline,pseudo,classmix,depthmix,mtl_depthmix", "0,1,2", 150, 6,
         24, 64, 0.02, 0))
    a = ssl_minicity.parse_args(["--steps=500"])
    self.assertEqual((a.regime, a.steps, a.rows.split(",")),
                     ("paired", 500, list(ssl_minicity.ROWS)))
    self.assertLen(a.seeds.split(","), 5)
    a = ssda_minicity.parse_args(["--regime=legacy"])
    self.assertEqual((a.steps, a.n, a.batch, a.seeds), (100, 8, 4, "0,1,2"))
    a = ssda_minicity.parse_args([])
    self.assertIn("dacs", a.rows.split(","))
    self.assertLen(a.seeds.split(","), 5)

  def test_orderings_name_rows_of_the_configs(self):
    import ssda_minicity  # pylint: disable=g-import-not-at-top
    import ssl_minicity  # pylint: disable=g-import-not-at-top
    from configs import ssda_gta  # pylint: disable=g-import-not-at-top
    from configs import ssl_cityscapes  # pylint: disable=g-import-not-at-top
    for bench, rows in ((ssl_minicity, ssl_cityscapes.ROWS),
                        (ssda_minicity, tuple(ssda_gta.ROWS))):
      for o in bench.PAPER_ORDERINGS:
        self.assertIn(o.hi, rows)
        self.assertIn(o.lo, rows)
      for r in bench.REGIMES["paired"]["rows"].split(","):
        self.assertIn(r, rows)
