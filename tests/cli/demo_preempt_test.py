"""A preempted demo stops, exit code 0, and the rerun continues the stage.

Through the real command line (``configs/demo.py:tiny`` with a few more SDE
steps): SIGTERM while the target SDE stage trains makes that run save its
checkpoint and ends the whole demo with exit code 0, without marking the
stage done; the rerun in the same workdir finishes the stage at its step
count (marked done with that count) and moves on, where a second SIGTERM
stops it again.
"""

import json
import os
import shutil
import signal
import tempfile

from absl.testing import absltest

from sdeseg_jax.train import checkpoint as ckpt_lib
from tests.cli import _cli

_STEPS = 6


def _run_until(workdir: str, marker: str, env: dict[str, str]):
  """Runs the tiny demo, sends SIGTERM once ``marker`` is printed; returns
  ``(exit code, output)``."""
  proc = _cli.start_main(
      f"--config=configs/demo.py:tiny,sde_steps={_STEPS}",
      f"--workdir={workdir}", env=env)
  lines, sent = [], False
  try:
    for line in proc.stdout:
      lines.append(line)
      if not sent and marker in line:
        proc.send_signal(signal.SIGTERM)
        sent = True
    rc = proc.wait(timeout=600)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return rc, "".join(lines), sent


class DemoPreemptionTest(absltest.TestCase):

  def test_sigterm_stops_the_demo_and_the_rerun_continues_the_stage(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    workdir = os.path.join(root, "demo")
    # Both runs compile the same SDE programs: share a compilation cache,
    # and compile without XLA's optimisations (a few steps do not notice).
    env = {"JAX_COMPILATION_CACHE_DIR": os.path.join(root, "cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    stage_file = lambda name: os.path.join(workdir, "stages", name + ".json")
    latest = lambda name: ckpt_lib.Checkpointer(
        os.path.join(workdir, name)).latest_step()

    rc, out, sent = _run_until(workdir, f"[sde_target] {_STEPS} steps", env)
    self.assertTrue(sent, out[-3000:])
    self.assertEqual(rc, 0, out[-3000:])
    self.assertIn("[sde_target] preempted at step", out)
    self.assertNotIn("[sde_source]", out)
    self.assertFalse(os.path.exists(stage_file("sde_target")))
    first = latest("sde_target")
    self.assertIsNotNone(first)
    self.assertLess(first, _STEPS)

    rc, out, sent = _run_until(workdir, f"[sde_source] {_STEPS} steps", env)
    self.assertTrue(sent, out[-3000:])
    self.assertEqual(rc, 0, out[-3000:])
    self.assertNotIn("[sde_target] done, skipped", out)
    self.assertEqual(json.load(open(stage_file("sde_target"))),
                     {"steps": _STEPS})
    self.assertEqual(latest("sde_target"), _STEPS)
    self.assertIn("[sde_source] preempted at step", out)
    self.assertFalse(os.path.exists(stage_file("sde_source")))
    self.assertLess(latest("sde_source"), _STEPS)


if __name__ == "__main__":
  absltest.main()
