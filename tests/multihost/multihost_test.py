"""Two processes on this host train like one process with two devices.

Starts ``tests/multihost/_worker.py`` as subprocesses: the reference (one
process, two CPU devices, reading both process shards of the data) and a
two-process run (``jax.distributed.initialize`` on 127.0.0.1, one CPU device
each, gloo collectives). Each start trains two MiniCity rows on a tiny net,
one after the other, 4 steps each, checkpoints every 2, evaluation and
image panels at the last step:

* SSDA ``cdm_tdm_mgs`` (source CE, cross-domain and target-domain DepthMix,
  the mean teacher, Matching Geometry Sampling, with pseudo depth written by
  this test). Both processes get SIGTERM at step 3 (a preemption of the
  job): they finish the step, save checkpoint 3 and return.
* SSL DepthMix (mean teacher, DepthMix, strong augmentation). Process 1 is
  then SIGKILLed when it fetches the batch of step 4, after the step-2
  checkpoint (a worker lost).

Both processes then start again with the same command, resume each row
from its last checkpoint and finish. For both rows every step's metrics
(loss, CE terms, mix losses, q, MGS figures, gradient norm), and the final
parameters, BatchNorm statistics, EMA teacher and optimiser state, must
equal the reference's to 1e-5; the evaluation runs on both processes and
process 0 writes the same mIoU tables as the reference; the TensorBoard
image panels (predictions, SSL mixing) are pixel-equal to the reference's;
the checkpoints are one per step for the whole job; process 1 writes no
event file.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl.testing import absltest
import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from sdeseg_jax.data import minicity  # noqa: E402
from sdeseg_jax.train import export  # noqa: E402
from tests import _fixtures  # noqa: E402

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "_worker.py")
_STEPS = 4
_TIMEOUT = 600
_MODES = ("ssda", "ssl")
# Per-step metrics both rows report; each row's other keys are compared too.
_SOME_METRICS = {"ssda": ("loss", "ce_target", "ce_source", "cdm_loss",
                          "tdm_loss", "mgs_g_chosen", "grad_norm"),
                 "ssl": ("loss", "ce", "mix_loss", "grad_norm", "mask_mean",
                         "q")}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the worker sets its own device count
  return env


def _write_pseudo_depth(root, image_dir, out_dir):
  """A u16 pseudo disparity (SSDA paper scale) for every image under
  ``root/image_dir``: a ramp growing towards the bottom of the image plus
  the image's brightness, so depth masks differ between images."""
  n = 0
  for dirpath, _, files in os.walk(os.path.join(root, image_dir)):
    for f in files:
      path = os.path.join(dirpath, f)
      with Image.open(path) as im:
        grey = np.asarray(im.convert("L"), np.float64) / 255.0
      h = grey.shape[0]
      disp = 0.1 + 0.6 * np.linspace(0.0, 1.0, h)[:, None] + 0.25 * grey
      out = os.path.join(out_dir, export.pseudo_depth_relpath(
          os.path.relpath(path, root)))
      os.makedirs(os.path.dirname(out), exist_ok=True)
      Image.fromarray(export.encode(disp, "u16", False)).save(out)
      n += 1
  if not n:
    raise FileNotFoundError(f"no images under {root}/{image_dir}")


def _images(workdir):
  """``{(step, tag): [N, H, W, C] uint8}`` of the run's TensorBoard panels,
  and the names of its event files."""
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  paths = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  for path in paths:
    for raw in tf.data.TFRecordDataset(path):
      ev = event_pb2.Event.FromString(raw.numpy())
      for v in ev.summary.value:
        if v.metadata.plugin_data.plugin_name != "images":
          continue
        pngs = tf.make_ndarray(v.tensor)[2:]  # width, height, images
        out[(ev.step, v.tag)] = np.stack([
            tf.io.decode_png(p).numpy() for p in pngs])
  return out, [os.path.basename(p) for p in paths]


class MultiHostTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp, cls.data, cls.tfds = _fixtures.generate_minicity(8, 2)
    open(cls.data + ".done", "w").close()
    cls.source = os.path.join(cls.tmp, "gta")
    minicity.generate(cls.source, "gta5", 0, width=64, height=32,
                      num_train_sequences=8, num_val_sequences=2, log=None)
    cls.pseudo = os.path.join(cls.tmp, "pseudo_depth")
    _write_pseudo_depth(cls.data, "leftImg8bit",
                        os.path.join(cls.pseudo, "target"))
    _write_pseudo_depth(cls.source, "images",
                        os.path.join(cls.pseudo, "source"))
    cls.cache = os.path.join(cls.tmp, "jax_cache")

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _cmd(self, workdir, *extra):
    return [sys.executable, _WORKER, f"--data={self.data}",
            f"--source={self.source}", f"--pseudo={self.pseudo}",
            f"--tfds={self.tfds}", f"--workdir={workdir}",
            f"--steps={_STEPS}", "--checkpoint_every=2",
            f"--cache={self.cache}", *extra]

  def _start(self, workdir, n, tag, extra=None):
    port = _free_port()
    procs = []
    for i in range(n):
      log = open(os.path.join(self.tmp, f"{tag}_p{i}.log"), "w")
      args = [f"--num_processes={n}", f"--process_id={i}", f"--port={port}",
              *(extra or {}).get(i, ())]
      procs.append((subprocess.Popen(self._cmd(workdir, *args), env=_env(),
                                     stdout=log, stderr=subprocess.STDOUT),
                    log))
    return procs

  def _log(self, tag, i):
    with open(os.path.join(self.tmp, f"{tag}_p{i}.log")) as f:
      return f.read()

  def _os_pid(self, tag, i):
    """The operating-system pid the worker of process ``i`` printed."""
    for line in self._log(tag, i).splitlines():
      if line.startswith(f"WORKER PID {i} "):
        return int(line.split()[-1])
    self.fail(f"{tag} process {i} printed no pid:\n"
              + self._log(tag, i)[-3000:])

  def _wait_ok(self, procs, tag):
    for i, (p, log) in enumerate(procs):
      rc = p.wait(timeout=_TIMEOUT)
      log.close()
      self.assertEqual(rc, 0, self._log(tag, i)[-3000:])

  def _metrics(self, workdir, pid=0):
    with open(os.path.join(workdir, f"metrics_p{pid}.jsonl")) as f:
      return {m["step"]: m for m in map(json.loads, f)}

  def _state(self, workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    ckptr = ocp.PyTreeCheckpointer()
    meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta).tree
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=dev), tree)
    return jax.device_get(ckptr.restore(
        path, args=ocp.args.PyTreeRestore(restore_args=args)))

  def test_two_processes_equal_one_and_survive_preemption_and_a_lost_worker(
      self):
    t0 = time.time()
    ref = os.path.join(self.tmp, "ref")
    p = subprocess.run(self._cmd(ref, "--shards=2"), env=_env(),
                       capture_output=True, text=True, timeout=_TIMEOUT)
    self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-3000:])
    print(f"reference run: {time.time() - t0:.0f}s", flush=True)

    # Two processes: SIGTERM to both at SSDA step 3; then process 1 dies
    # while fetching the SSL batch of step 4.
    t = time.time()
    run = os.path.join(self.tmp, "two")
    procs = self._start(run, 2, "killed",
                        extra={0: ["--sigterm_at_step=3"],
                               1: ["--sigterm_at_step=3",
                                   "--die_at_step=4"]})
    self.assertEqual(procs[1][0].wait(timeout=_TIMEOUT), -signal.SIGKILL,
                     self._log("killed", 1)[-3000:])
    try:  # process 0 is left waiting in a collective, or fails
      procs[0][0].wait(timeout=20)
    except subprocess.TimeoutExpired:
      procs[0][0].kill()
      procs[0][0].wait()
    for _, log in procs:
      log.close()
    print(f"killed run: {time.time() - t:.0f}s", flush=True)
    for i in range(2):
      log = self._log("killed", i)
      self.assertIn("preempted: saved step 3, exiting.", log)
      self.assertIn("WORKER MODE DONE ssda", log)
      self.assertNotIn("WORKER MODE DONE ssl", log)
    ckpts = {m: os.path.join(run, m, "checkpoints") for m in _MODES}
    self.assertEqual(sorted(os.listdir(ckpts["ssda"])), ["2", "3"])
    self.assertEqual(sorted(os.listdir(ckpts["ssl"])), ["2"])
    killed = {m: self._metrics(os.path.join(run, m)) for m in _MODES}
    self.assertEqual(sorted(killed["ssda"]), [1, 2, 3])
    self.assertEqual(sorted(killed["ssl"]), [1, 2, 3])

    # Both start again with the same command, resume each row, finish.
    t = time.time()
    procs = self._start(run, 2, "resumed")
    self._wait_ok(procs, "resumed")
    print(f"resumed run: {time.time() - t:.0f}s", flush=True)
    resumed_from = {"ssda": 3, "ssl": 2}
    for i in range(2):
      log = self._log("resumed", i)
      for m, s in resumed_from.items():
        self.assertIn(f"restored checkpoint {s}", log)
        self.assertIn(f"starting at step {s} of {_STEPS}", log)
    # Process 1 wrote no TensorBoard events (panels included) in any start.
    pid1 = [self._os_pid(tag, 1) for tag in ("killed", "resumed")]
    pid0 = [self._os_pid(tag, 0) for tag in ("killed", "resumed")]

    for mode in _MODES:
      with self.subTest(mode=mode):
        self._check_mode(mode, os.path.join(ref, mode),
                         os.path.join(run, mode), killed[mode],
                         resumed_from[mode], pid0, pid1)
    print(f"whole test: {time.time() - t0:.0f}s", flush=True)

  def _check_mode(self, mode, ref, run, killed, resumed_from, pid0, pid1):
    ckpts = os.path.join(run, "checkpoints")
    want_ckpts = sorted({"2", str(resumed_from), str(_STEPS)})
    self.assertEqual(sorted(os.listdir(ckpts)), want_ckpts)
    # Written once: one checkpoint of the whole job per step (not one per
    # process), holding every process's data iterator position.
    for step in want_ckpts:
      self.assertTrue(os.path.isfile(os.path.join(ckpts, step, "state",
                                                  "manifest.ocdbt")))
      self.assertEqual(
          sorted(os.listdir(os.path.join(ckpts, step, "data_iter"))),
          ["commit_success.txt", "process_0-of-2.json",
           "process_1-of-2.json"])

    want = self._metrics(ref)
    resumed = self._metrics(run)
    got = {**killed,
           **{s: m for s, m in resumed.items() if s > resumed_from}}
    self.assertEqual(sorted(got), list(range(1, _STEPS + 1)))
    self.assertEqual(sorted(self._metrics(run, pid=1)),
                     list(range(1, _STEPS + 1)))
    self.assertContainsSubset(_SOME_METRICS[mode], want[_STEPS])
    for s in got:
      self.assertEqual(sorted(got[s]), sorted(want[s]), f"step {s}")
      for k in want[s]:
        np.testing.assert_allclose(got[s][k], want[s][k], rtol=1e-5,
                                   atol=1e-7, err_msg=f"{mode} step {s} {k}")
    # The run did learn something that a wrong resume would change.
    self.assertNotAlmostEqual(want[3]["loss"], want[4]["loss"], places=3)
    for mix in (("mix_loss",) if mode == "ssl" else ("cdm_loss",
                                                      "tdm_loss")):
      self.assertGreater(want[_STEPS][mix], 0.0, mix)

    a, b = self._state(ref, _STEPS), self._state(run, _STEPS)
    self.assertEqual(int(b["step"]), _STEPS)
    for name in ("params", "ema_params", "batch_stats", "ema_batch_stats",
                 "opt_state"):
      la, lb = jax.tree.leaves(a[name]), jax.tree.leaves(b[name])
      self.assertEqual(len(la), len(lb), name)
      self.assertNotEmpty(la, name)
      for x, y in zip(la, lb):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{mode} {name}")
    moved = [not np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(a["params"]), jax.tree.leaves(a["ema_params"]))]
    self.assertTrue(any(moved))
    # The evaluation ran on both processes and process 0 wrote the same
    # mIoU table as the reference.
    table = f"eval/segmentation/step_{_STEPS}.md"
    with open(os.path.join(ref, table)) as f, \
         open(os.path.join(run, table)) as g:
      self.assertEqual(f.read(), g.read())

    # Panels: the same tags, pixel-equal; only process 0's event files.
    want_img, _ = _images(ref)
    got_img, names = _images(run)
    self.assertEqual(sorted(got_img), sorted(want_img))
    tags = {tag for _, tag in want_img}
    self.assertIn("segmentation/predictions", tags)
    if mode == "ssl":
      self.assertIn("mix_panels", tags)
    for key, x in want_img.items():
      self.assertEqual(key[0], _STEPS)
      np.testing.assert_array_equal(got_img[key], x, err_msg=f"{mode} {key}")
    writers = {int(n.split(".")[-3]) for n in names}
    self.assertTrue(writers <= set(pid0), (names, pid0))
    self.assertFalse(writers & set(pid1), (names, pid1))


if __name__ == "__main__":
  absltest.main()
