r"""Mode ``prepare``: prepares one dataset (tfds array_record) and prints stats.

  python -m sdeseg_jax.main --config=configs/prepare.py:layout=cityscapes,\
path=/data/cityscapes,offsets=-1/0/1 --workdir=/tmp/prep

``config.prepare_stream`` names the stream of ``config.data`` to prepare;
the tfds files go to ``config.data.tfds_dir`` (default ``<workdir>/tfds``).
Statistics (counts per split, image sizes, intrinsics, class pixel
frequencies) are printed and written to
``<workdir>/stats_<tfds config name>.json``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from sdeseg_jax.data import builder as builder_lib
from sdeseg_jax.data import labels as labels_lib


def tfds_dir(config, workdir: str) -> str:
  return config.data.tfds_dir or os.path.join(workdir, "tfds")


def dataset_statistics(builder) -> dict[str, Any]:
  """Counts, sizes, intrinsics and class frequencies of a prepared dataset.

  Returns:
    ``{split: {"count", "labeled", "image_sizes", "intrinsics_mean",
    "full_sizes", "class_pixel_freq" ({class: fraction of labeled
    pixels}), "class_image_freq" ({class: fraction of labeled images}),
    "ignore_fraction", "depth"}}``.
  """
  out = {}
  for split in sorted(builder.info.splits):
    src = builder.as_data_source(split=split)
    n = len(src)
    counts = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    sizes, full_sizes, intr = set(), set(), []
    labeled = with_depth = 0
    for i in range(n):
      r = src[i]
      sizes.add(tuple(int(x) for x in r["image_size"]))
      full_sizes.add(tuple(int(x) for x in r["full_size"]))
      intr.append(np.asarray(r["intrinsics"], np.float64))
      with_depth += bool(len(r["depth"]))
      if len(r["label"]):
        labeled += 1
        lbl = np.asarray(Image.open(io.BytesIO(bytes(r["label"]))))
        c = np.bincount(lbl.ravel(), minlength=256)
        counts += c
        present += c > 0
    total = max(int(counts.sum()), 1)
    names = labels_lib.CLASS_NAMES
    out[split] = {
        "count": n,
        "labeled": labeled,
        "with_depth": with_depth,
        "image_sizes": [list(x) for x in sorted(sizes)],
        "full_sizes": [list(x) for x in sorted(full_sizes)],
        "intrinsics_mean": [round(float(v), 6) for v in np.mean(intr, 0)],
        "class_pixel_freq": {
            names[k]: round(float(counts[k]) / total, 6)
            for k in range(labels_lib.NUM_CLASSES)},
        "class_image_freq": {
            names[k]: round(float(present[k]) / max(labeled, 1), 4)
            for k in range(labels_lib.NUM_CLASSES)},
        "ignore_fraction": round(
            float(counts[labels_lib.IGNORE_INDEX]) / total, 6),
    }
  return out


def format_statistics(name: str, stats: dict[str, Any]) -> str:
  """Human-readable table of ``dataset_statistics`` output."""
  lines = [f"== {name}"]
  for split, s in stats.items():
    lines.append(
        f"  {split}: {s['count']} samples ({s['labeled']} labeled, "
        f"{s['with_depth']} with depth), image sizes {s['image_sizes']}, "
        f"full res {s['full_sizes']}, intrinsics (fx/W, fy/H, cx/W, cy/H) "
        f"{s['intrinsics_mean']}")
    if s["labeled"]:
      freq = ", ".join(f"{k} {v:.3f}" for k, v in
                       s["class_pixel_freq"].items())
      lines.append(f"    class pixel freq: {freq}")
      lines.append(f"    ignore fraction: {s['ignore_fraction']:.3f}")
  return "\n".join(lines)


def prepare_stream(stream, data_dir: str, workdir: str,
                   log=print) -> dict[str, Any]:
  """Prepares a stream's dataset, writes and prints its statistics."""
  builder = builder_lib.prepare(stream, data_dir)
  stats_path = os.path.join(
      workdir, f"stats_{builder_lib.config_name(stream)}.json")
  record = os.path.join(builder.data_dir, builder_lib.SOURCES_FILE)
  # Statistics older than the (re)preparation describe the old files.
  if os.path.isfile(stats_path) and (
      os.stat(stats_path).st_mtime_ns >= os.stat(record).st_mtime_ns):
    with open(stats_path) as f:
      stats = json.load(f)
  else:
    stats = dataset_statistics(builder)
    tmp = stats_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(stats, f, indent=1)
    os.replace(tmp, stats_path)
  log(format_statistics(f"{stream.name} ({stream.layout}, "
                        f"{builder.data_dir})", stats))
  return stats


def run(config, workdir: str) -> dict[str, Any]:
  """Mode ``prepare``: prepares ``config.data[config.prepare_stream]``."""
  name = config.prepare_stream
  if name not in config.data:
    raise ValueError(
        f"config.prepare_stream={name!r} is not a stream of config.data "
        f"({sorted(k for k in config.data if k != 'tfds_dir')})")
  stream = config.data[name]
  logging.info("preparing %s from %s", stream.name, stream.path)
  return prepare_stream(stream, tfds_dir(config, workdir), workdir)
