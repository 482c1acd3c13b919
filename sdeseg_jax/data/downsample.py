r"""Offline downsampling into the reference's ``_small`` folders.

  python -m sdeseg_jax.data.downsample --root /data/cityscapes \
      --layout cityscapes [--width 1024 --height 512] [--workers 2]

As the reference preprocesses its data: every ``*.png`` image of the layout's image folders
(Cityscapes ``leftImg8bit`` and ``leftImg8bit_sequence``, GTA5 ``images``,
Synthia ``RGB`` and ``video``) is resized to 1024x512 with PIL Lanczos
(``Image.ANTIALIAS``; the aspect ratio is *not* kept, as in the reference) and
written as JPEG quality 98 with 4:4:4 chroma (``subsampling=0``) to the same
relative path in ``<folder>_small`` with ``.jpg``. Paths containing a
``/test`` component are skipped. Files are written to a temporary name and
renamed, so an interrupted run leaves no partial JPEG; a rerun skips files
that exist (resumable). A second pass reopens every JPEG and re-creates the
ones that fail to decode. Labels are never downsampled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from PIL import Image

from sdeseg_jax import errors

FOLDERS = {
    "cityscapes": ("leftImg8bit", "leftImg8bit_sequence"),
    "gta5": ("images",),
    "synthia": ("RGB", "video"),
}


def _is_test(rel: str) -> bool:
  return "test" in rel.split(os.sep)


def list_jobs(root: str, layout: str) -> list[tuple[str, str]]:
  """``(source png, target jpg)`` pairs of a dataset folder.

  Raises:
    FileNotFoundError: none of the layout's image folders exists.
  """
  if layout not in FOLDERS:
    raise ValueError(f"layout {layout!r}; expected one of {sorted(FOLDERS)}")
  found = [f for f in FOLDERS[layout] if os.path.isdir(os.path.join(root, f))]
  if not found:
    raise FileNotFoundError(
        f"{root}: none of the {layout} image folders "
        f"{list(FOLDERS[layout])} exists")
  jobs = []
  for folder in found:
    src_base = os.path.join(root, folder)
    dst_base = os.path.join(root, folder + "_small")
    for dirpath, _, files in os.walk(src_base):
      for f in files:
        if not f.endswith(".png"):
          continue
        src = os.path.join(dirpath, f)
        rel = os.path.relpath(src, src_base)
        if _is_test(rel):
          continue
        jobs.append((src, os.path.join(dst_base, rel[:-4] + ".jpg")))
  return sorted(jobs)


def convert(src: str, dst: str, size: tuple[int, int]) -> None:
  """Lanczos-resizes ``src`` to ``size`` (W, H), writes JPEG q98 4:4:4."""
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  with Image.open(src) as img:
    img = img.convert("RGB").resize(size, Image.LANCZOS)
  tmp = dst + ".tmp"
  img.save(tmp, format="JPEG", quality=98, subsampling=0)
  os.replace(tmp, dst)


def is_valid(path: str) -> bool:
  """Whether a JPEG exists and decodes completely."""
  try:
    with Image.open(path) as img:
      img.load()
    return True
  except Exception:  # Any decode failure means "re-create".
    return False


def _work(args):
  src, dst, size = args
  convert(src, dst, size)
  return dst


def run(root: str, layout: str, size=(1024, 512), workers: int = 1,
        log=print) -> dict[str, int]:
  """Downsamples a dataset folder; returns counts of what was done.

  Returns:
    ``{"total", "converted", "skipped", "repaired"}``.
  """
  jobs = list_jobs(root, layout)
  todo = [(s, d, tuple(size)) for s, d in jobs if not os.path.isfile(d)]
  log(f"{len(jobs)} images, {len(jobs) - len(todo)} already done, "
      f"{len(todo)} to convert")
  t0 = time.time()

  def progress(i):
    if i == len(todo) or i % 100 == 0:
      rate = i / max(time.time() - t0, 1e-9)
      log(f"  {i}/{len(todo)} ({rate:.1f} images/s)")

  if workers > 1 and len(todo) > 1:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      for i, _ in enumerate(pool.imap_unordered(_work, todo, chunksize=8), 1):
        progress(i)
  else:
    for i, job in enumerate(todo, 1):
      _work(job)
      progress(i)
  # Second pass as in the reference: re-create corrupted outputs (e.g. from
  # a previous run killed by an older, non-atomic tool).
  repaired = 0
  for src, dst in jobs:
    if not is_valid(dst):
      convert(src, dst, tuple(size))
      repaired += 1
  if repaired:
    log(f"re-created {repaired} corrupted JPEGs")
  return {"total": len(jobs), "converted": len(todo),
          "skipped": len(jobs) - len(todo), "repaired": repaired}


@errors.cli_main
def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      prog="python -m sdeseg_jax.data.downsample",
      description="Lanczos-resizes a dataset's images to WIDTHxHEIGHT JPEG "
      "q98 4:4:4 in its *_small folders (as the reference does); skips /test "
      "and files already done.")
  p.add_argument("--root", required=True, help="dataset folder")
  p.add_argument("--layout", required=True, choices=sorted(FOLDERS))
  p.add_argument("--width", type=int, default=1024)
  p.add_argument("--height", type=int, default=512)
  p.add_argument("--workers", type=int, default=1)
  a = p.parse_args(argv)
  counts = run(a.root, a.layout, (a.width, a.height), a.workers)
  print(counts)
  return 0


if __name__ == "__main__":
  sys.exit(main())
