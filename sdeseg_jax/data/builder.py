"""tfds builder that prepares a dataset folder into array_record splits.

One builder class, :class:`SdesegData`, serves every layout; a
:class:`StreamBuilderConfig` made from a stream config
(``configs/common.py:stream_config``) names the layout and the reader
settings. ``manual_dir`` is the dataset folder. Preparation lists and fully
decodes every frame (``readers.list_samples(check=True)``), checks every
label id, and stores per sample:

* ``frames``: the encoded bytes of every frame file as found on disk (PNG or
  JPEG, not re-encoded), ordered by the sorted ``frame_offsets``;
* ``label``: train ids (uint8 PNG at the label file's resolution), or ``b""``;
* ``depth``: ground-truth depth as a uint16 PNG, metres = value *
  ``depth_unit``, 0 = invalid (MiniCity depth as written by the generator;
  Cityscapes disparity converted to depth with unit 1/256 m), or ``b""``;
* ``intrinsics`` ``(fx/W, fy/H, cx/W, cy/H)``, ``full_size`` ``(W, H)``,
  ``image_size`` ``(W, H)`` of the stored frames, ``index``, ``relpath``,
  ``camera_height``, ``camera_pitch`` (NaN when unknown);
* ``poses`` (only for a stream with ``with_pose``): ``[T, 16]`` float64,
  every frame's 4x4 camera-to-world pose (row-major) from the MiniCity
  sidecar.

The config name carries a hash of the reader settings and the dataset
path, so that changing, e.g., ``frame_offsets`` or the folder prepares a new
dataset rather than reusing a stale one. ``with_pose`` enters the hash only
when it is set: a pose stream therefore never reuses a folder prepared
without poses, while the names (and prepared folders) of the streams without
poses stay what they were before the key existed.

A prepared dataset also records the files it was made from (path, size and
modification time, ``SOURCES_FILE``); ``prepare`` prepares again when the
folder changed, so edited labels are checked again rather than reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from typing import Any

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from sdeseg_jax.data import layouts as layouts_lib
from sdeseg_jax.data import readers
from sdeseg_jax.data.readers import DatasetError

VERSION = "1.0.0"
# In a prepared dataset's folder: the listing of the files it was made from.
SOURCES_FILE = "sdeseg_sources.json"
# Keys of a stream config that change what is stored.
_READER_KEYS = ("layout", "image_folder", "frame_offsets", "all_frames",
                "val_count", "intrinsics", "full_res", "sequence_path")
CITYSCAPES_DEPTH_UNIT = 1.0 / 256.0


def reader_settings(stream) -> dict[str, Any]:
  """The reader-relevant part of a stream config as a JSON-able dict.

  Includes the absolute dataset path, so that two folders prepared under
  the same stream name never share (stale) files.
  """
  out = {"path": os.path.abspath(stream.path) if stream.path else ""}
  for k in _READER_KEYS:
    v = stream[k]
    out[k] = list(v) if isinstance(v, (tuple, list)) else v
  if stream.with_pose:
    # Only when set, so that the hash of every pose-less stream (and hence
    # its already prepared folder) is unchanged; see the module docstring.
    out["with_pose"] = True
  return out


def config_name(stream) -> str:
  digest = hashlib.sha1(json.dumps(
      reader_settings(stream), sort_keys=True).encode()).hexdigest()[:8]
  return f"{stream.name}_{digest}"


class StreamBuilderConfig(tfds.core.BuilderConfig):
  """Builder config holding a stream config's reader settings."""

  def __init__(self, *, stream, **kwargs):
    settings = reader_settings(stream)
    super().__init__(name=config_name(stream), version=VERSION,
                     description=json.dumps(settings, sort_keys=True),
                     **kwargs)
    self.stream = stream


class SdesegData(tfds.core.GeneratorBasedBuilder):
  """Cityscapes / GTA5 / Synthia / CamVid folders as array_record splits."""

  VERSION = tfds.core.Version(VERSION)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "manual_dir is the dataset folder in its real layout (see "
      "sdeseg_jax/data/readers.py) or a MiniCity output folder.")

  def _info(self) -> tfds.core.DatasetInfo:
    string = tfds.features.Tensor(shape=(), dtype=np.object_)
    stream = self.builder_config.stream
    extra = {}
    if stream.with_pose:
      extra["poses"] = tfds.features.Tensor(
          shape=(len(stream.frame_offsets), 16), dtype=np.float64)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Sequence(string),
            "label": string,
            "depth": string,
            "depth_unit": tfds.features.Tensor(shape=(), dtype=np.float32),
            "intrinsics": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "full_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "index": tfds.features.Tensor(shape=(), dtype=np.int32),
            "relpath": string,
            "camera_height": tfds.features.Tensor(shape=(), dtype=np.float32),
            "camera_pitch": tfds.features.Tensor(shape=(), dtype=np.float32),
            **extra,
        }),
        disable_shuffling=True,
        description="sdeseg_jax dataset; reader settings: "
        + self.builder_config.description)

  def _split_generators(self, dl_manager):
    stream = self.builder_config.stream
    root = os.fspath(dl_manager.manual_dir)
    splits = layouts_lib.LAYOUTS[stream.layout].splits
    # List every split first so that a broken dataset fails before writing.
    samples = {s: _list(stream, root, s) for s in splits}
    return {s: self._generate_examples(samples[s], stream.layout,
                                       stream.with_pose)
            for s in splits if samples[s] is not None}

  def _generate_examples(self, samples, layout, with_pose):
    for s in samples:
      yield s.index, encode_sample(s, layout, with_pose=with_pose)

  # tfds prints "Downloading and preparing dataset ..." to stdout; nothing is
  # downloaded here, so say what happens instead, in the log.
  def _log_download_bytes(self) -> None:
    logging.info("preparing dataset %s from %s into %s (read from the local "
                 "folder; nothing is downloaded)", self.builder_config.name,
                 self.builder_config.stream.path, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("dataset prepared in %s; later runs reuse it.",
                 self.data_dir)


def _list(stream, root, split):
  """Samples of a split; None when the layout has no such split on disk."""
  cfg = _Override(stream, path=root)
  try:
    return readers.list_samples(cfg, split, check=True)
  except DatasetError as e:
    # A missing optional split folder (e.g. CamVid test, Cityscapes val of a
    # train-only MiniCity) is skipped; everything else is an error.
    if split != "train" and "missing folder" in str(e) and (
        os.sep + split in str(e)):
      return None
    raise


class _Override:
  """Read-only view of a config with a few keys replaced."""

  def __init__(self, base, **kw):
    self._base, self._kw = base, kw

  def __getattr__(self, k):
    if k in self._kw:
      return self._kw[k]
    return getattr(self._base, k)


def _png(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def encode_sample(s: readers.Sample, layout: str, *,
                  with_pose: bool = False) -> dict[str, Any]:
  """The stored record of one sample (see the module docstring).

  Args:
    s: the sample; with ``with_pose`` its ``poses`` must be filled
      (``readers.list_samples`` of a ``with_pose`` stream).
    layout: one of ``layouts.NAMES`` (label id table).
    with_pose: store ``poses`` ``[T, 16]``.

  Returns:
    The record's feature dict.
  """
  frames = [readers.read_image_bytes(f) for f in s.frames]
  sizes = set()
  for f in s.frames:
    with Image.open(f) as im:
      sizes.add(im.size)
  if len(sizes) != 1:
    raise DatasetError(
        f"frames of {s.relpath} have different sizes {sorted(sizes)}: "
        f"{s.frames}")
  label = b""
  if s.label:
    label = _png(readers.load_train_ids(s.label, layout))
  depth, unit = b"", 0.0
  if s.depth:
    readers.check_image(s.depth)
    with Image.open(s.depth) as im:
      raw = np.asarray(im)
    if raw.dtype not in (np.uint16, np.int32) or raw.ndim != 2:
      raise DatasetError(
          f"{s.depth}: expected a single-channel 16-bit PNG, got "
          f"{raw.dtype} {raw.shape}")
    if s.depth_kind == "cityscapes_disparity":
      d = readers.disparity_to_depth(raw, s.depth_scale)
      unit = CITYSCAPES_DEPTH_UNIT
      depth = _png(np.clip(np.round(d / unit), 0, 65535).astype(np.uint16))
    else:
      unit = s.depth_scale
      depth = readers.read_image_bytes(s.depth)
  extra = {}
  if with_pose:
    if len(s.poses) != len(s.frames):
      raise DatasetError(
          f"{s.relpath}: {len(s.poses)} poses for {len(s.frames)} frames; "
          "list the samples with with_pose=True")
    # float64: world coordinates of long streets lose millimetres in
    # float32, and the relative transforms are differences of them.
    extra["poses"] = np.asarray(s.poses, np.float64).reshape(-1, 16)
  return {
      "frames": frames, "label": label, "depth": depth,
      "depth_unit": np.float32(unit),
      "intrinsics": np.asarray(s.intrinsics, np.float32),
      "full_size": np.asarray(s.full_size, np.int32),
      "image_size": np.asarray(sizes.pop(), np.int32),
      "index": np.int32(s.index), "relpath": s.relpath,
      "camera_height": np.float32(s.camera_height),
      "camera_pitch": np.float32(s.camera_pitch),
      **extra,
  }


def make_builder(stream, data_dir: str) -> SdesegData:
  """The builder of a stream config, reading and writing under ``data_dir``."""
  return SdesegData(config=StreamBuilderConfig(stream=stream),
                    data_dir=data_dir, file_format="array_record")


def source_files(stream, exclude: str = "") -> dict[str, list[int]]:
  """``{path: [size, mtime_ns]}`` of every file of the stream's folders.

  The fingerprint of what a prepared dataset was made from: the dataset
  folder and, when set, the sequence folder (paths relative to each, the
  latter prefixed ``sequence_path:``). ``exclude`` (the tfds directory,
  should it lie inside the dataset folder) is skipped.
  """
  roots = [("", stream.path)]
  if stream.sequence_path:
    roots.append(("sequence_path:", stream.sequence_path))
  skip = os.path.realpath(exclude) if exclude else None
  out = {}
  for prefix, root in roots:
    for d, dirs, files in os.walk(root):
      dirs[:] = sorted(x for x in dirs
                       if os.path.realpath(os.path.join(d, x)) != skip)
      for f in files:
        path = os.path.join(d, f)
        st = os.stat(path)
        out[prefix + os.path.relpath(path, root)] = [st.st_size,
                                                     st.st_mtime_ns]
  return out


def describe_changes(old: dict[str, list[int]],
                     new: dict[str, list[int]]) -> str:
  """A short account of how two ``source_files`` listings differ."""
  parts = []
  for what, names in (
      ("added", sorted(set(new) - set(old))),
      ("removed", sorted(set(old) - set(new))),
      ("changed", sorted(k for k in set(old) & set(new)
                         if old[k] != new[k]))):
    if names:
      more = f" and {len(names) - 3} more" if len(names) > 3 else ""
      parts.append(f"{len(names)} {what} ({', '.join(names[:3])}{more})")
  return "; ".join(parts) or "no files changed"


def _read_sources(path: str) -> dict[str, list[int]] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def prepare(stream, data_dir: str, *, check_sources: bool = True
            ) -> SdesegData:
  """Prepares the stream's dataset (no-op when prepared and still current).

  A prepared dataset records the listing of the files it was made from
  (``SOURCES_FILE``: path, size and modification time of every file). When
  the folder no longer matches (a file added, removed, rewritten or
  touched), the prepared copy is deleted and the folder is read and checked
  again, so a changed label file is checked, not silently reused. Content
  hashes would also catch a rewrite that keeps size and modification time,
  at the cost of reading the whole dataset on every start (docs/
  benchmarks.md).

  Args:
    stream: stream config; ``stream.path`` is the dataset folder.
    data_dir: tfds data directory.
    check_sources: compare the folder with the record; False trusts an
      already prepared dataset (``pipeline`` checks once per process).

  Returns:
    The prepared builder (``builder.as_data_source(split)`` reads it).
  """
  if not stream.path:
    raise DatasetError(
        f"stream {stream.name!r}: 'path' (dataset folder) is empty")
  readers._require_dir(stream.path, f"the {stream.layout} dataset folder")
  builder = make_builder(stream, data_dir)
  if not check_sources and builder.is_prepared():
    return builder
  files = source_files(stream, exclude=data_dir)
  record = os.path.join(builder.data_dir, SOURCES_FILE)
  old = _read_sources(record)
  if builder.is_prepared() and old != files:
    why = (describe_changes(old, files) if old is not None else
           f"prepared without a {SOURCES_FILE}")
    logging.warning("%s changed since %s was prepared (%s): preparing it "
                    "again", stream.path, builder.data_dir, why)
    shutil.rmtree(builder.data_dir)
    builder = make_builder(stream, data_dir)
  tfds.disable_progress_bar()  # One line per split is enough in logs.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=stream.path))
  if old != files:
    tmp = record + ".tmp"
    with open(tmp, "w") as f:
      json.dump(files, f, sort_keys=True)
    os.replace(tmp, record)
  return builder
