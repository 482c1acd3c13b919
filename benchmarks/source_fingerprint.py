r"""Cost of the prepared-data fingerprint: listing vs content hashes.

  python benchmarks/source_fingerprint.py [--workdir DIR] [--files 3000] \
      [--file-kib 100] [--sequences 24]

``sdeseg_jax.data.builder.prepare`` checks, on every loader start, that the
dataset folder still matches what was prepared. It lists every file with its
size and modification time (``builder.source_files``); the alternative is a
content hash (SHA-1) of every file. Both are timed on a MiniCity folder
(cityscapes layout, 256x128, ``--sequences`` train + 6 val sequences, 3
frames) and on a synthetic tree of ``--files`` files of ``--file-kib`` KiB
(random bytes, 30 per folder), each run three times after one warm-up (so
from the page cache: a cold read from disk is slower still). Ends with one
JSON line.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time

import _report
import numpy as np

from configs import common
from sdeseg_jax.data import builder
from sdeseg_jax.data import resolve


def content_hash(root: str) -> str:
  h = hashlib.sha1()
  for d, dirs, files in os.walk(root):
    dirs.sort()
    for f in sorted(files):
      with open(os.path.join(d, f), "rb") as fh:
        h.update(fh.read())
  return h.hexdigest()


def synthetic_tree(root: str, n: int, kib: int) -> None:
  rng = np.random.default_rng(0)
  for i in range(n):
    d = os.path.join(root, f"d{i // 30:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.png"), "wb") as f:
      f.write(rng.bytes(kib * 1024))


def tree_size(root: str) -> tuple[int, int]:
  n = size = 0
  for d, _, files in os.walk(root):
    for f in files:
      n += 1
      size += os.path.getsize(os.path.join(d, f))
  return n, size


def time_both(root: str) -> dict[str, float]:
  stream = common.stream_config("bench", "cityscapes", path=root)
  out = {}
  for name, fn in (("listing_s", lambda: builder.source_files(stream)),
                   ("sha1_s", lambda: content_hash(root))):
    fn()
    ts = []
    for _ in range(3):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
    out[name] = float(np.median(ts))
  n, size = tree_size(root)
  out.update(files=n, mib=round(size / 2**20, 1))
  return out


def main(argv=None) -> int:
  p = _report.parser(__doc__)
  p.add_argument("--workdir", default="")
  p.add_argument("--files", type=int, default=3000)
  p.add_argument("--file-kib", type=int, default=100)
  p.add_argument("--sequences", type=int, default=24)
  a = _report.parse(p, argv)
  work = a.workdir or tempfile.mkdtemp(prefix="fingerprint_")
  mc = os.path.join(work, "minicity")
  resolve.ensure_minicity(common.minicity_config(
      num_train_sequences=a.sequences, num_val_sequences=6), mc, log=None)
  syn = os.path.join(work, "synthetic")
  if not os.path.isdir(syn):
    synthetic_tree(syn, a.files, a.file_kib)
  res = {"minicity": time_both(mc), "synthetic": time_both(syn)}
  for k, r in res.items():
    print(f"{k}: {r['files']} files, {r['mib']} MiB: listing "
          f"{r['listing_s'] * 1e3:.1f} ms, sha1 {r['sha1_s'] * 1e3:.1f} ms")
  _report.emit_json({"benchmark": "source_fingerprint",
                     "cpu_count": os.cpu_count(), **res})
  return 0


if __name__ == "__main__":
  sys.exit(main())
