"""grain input pipelines: prepared tfds splits -> per-process numpy batches.

Entry point for the training engine::

  loader = make_loader(config.data.target, split="train",
                       global_batch_size=config.train.batch_size,
                       seed=config.seed, train=True, data_dir=tfds_dir)
  batch = next(loader)   # dict of host numpy arrays (docs/design.md), this
                         # process's share of the global batch
  batch = sharding.host_to_global(batch, mesh)   # only the trainer shards
  # orbax: checkpoint the iterator together with the state
  ocp.args.Composite(state=..., data_iter=grain.checkpoint.CheckpointSave(
      loader.iterator))
  # and restore it with grain.checkpoint.CheckpointRestore(loader.iterator).

``make_loader`` prepares the dataset first if it is not prepared yet
(``sdeseg_jax.data.builder.prepare``, a no-op otherwise; with several
processes, process 0 prepares first and the others wait). For large real
datasets run ``mode=prepare`` beforehand. The iterator state is only valid
for the same stream config and ``num_workers`` (grain's state of an
``mp_prefetch`` pipeline differs from the in-process one).

Pipeline shape (per process)::

  MapDataset.source(subset of tfds.data_source)
    .seed(seed).shuffle().repeat()            # train; eval: padded, in order
    [process_index::process_count]
    .random_map(ProcessSample)                # rng from (seed, element index)
    .batch(global_batch_size // process_count, drop_remainder=True)
    .to_iter_dataset(ReadOptions).mp_prefetch(MultiprocessingOptions)

so the order and every augmentation depend only on ``seed`` and the element
index: the same with 0 or N worker processes, and resumable from the small
JSON state of ``loader.iterator`` (``get_state``/``set_state``). Each epoch
is shuffled differently. Process shards are disjoint and together cover the
stream.

Evaluation (``train=False``): no shuffle, no repeat, no flip/crop/colour
augmentation; one pass over the split, padded to a multiple of the global
batch size with blank samples (``index`` -1, label all 250, depth 0) so that
every process gets the same number of full batches. Padding therefore never
changes a confusion matrix or depth metric.

Labeled subsets (``stream.subset``): ``all`` (every sample with a label),
``random`` (the reference's ``np.random.seed(seed);
np.random.permutation(N)[:n]``, sorted) or ``fixed`` (a JSON list of indices
into the split's sorted file list, e.g. ``mode=select``'s
``nlabels{N}_subset.json``; with ``n > 0`` its first ``n`` entries). ``load_labeled``/``load_unlabeled`` choose
which part the stream delivers; with both, the labeled samples come first in
the unshuffled order, as in the reference. Unlabeled samples have label all
250 and ``is_labeled`` False.

Pseudo depth (``stream.pseudo_depth_dir``): a folder mirroring the image
paths relative to the dataset root, ``.png`` instead of the image extension,
``_small`` folder suffixes removed; 8-bit (``u8``, /255) or 16-bit (``u16``,
/65535) at the stream's ``image_size``; see
``transforms.load_pseudo_depth``.

Ground-truth poses (``stream.with_pose``, MiniCity only): ``gt_cam_T_cam``
``[B, T, 4, 4]`` float32, for every frame the transform from the centre
camera to that frame's camera (``transforms.gt_cam_T_cam``), the convention
of the pose net's ``cam_T_cam``; mirrored with a flip, unchanged by crops.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import grain
import jax
import numpy as np

from sdeseg_jax.data import builder as builder_lib
from sdeseg_jax.data import transforms
from sdeseg_jax.data.readers import DatasetError


def reference_permutation(n_total: int, seed: int) -> np.ndarray:
  """``np.random.seed(seed); np.random.permutation(n_total)`` (legacy
  MT19937) as the reference draws its random subsets and data-selection
  seed images; seed 42 of 2975 starts 2403, 2865, 2159."""
  return np.random.RandomState(seed).permutation(n_total)


def reference_subset(n_total: int, n: int, seed: int) -> np.ndarray:
  """The reference's random labeled subset.

  ``np.random.seed(seed); np.random.permutation(n_total)[:n]``, sorted. For
  seed 42 and 2975 images the permutation starts 2403, 2865, 2159, ...

  Returns:
    [n] int64 sorted indices.
  """
  if not 0 < n <= n_total:
    raise ValueError(f"subset size n={n} must be in [1, {n_total}]")
  return np.sort(reference_permutation(n_total, seed)[:n])


def labeled_indices(stream, n_total: int) -> np.ndarray:
  """Indices of the labeled samples of a stream's split (sorted)."""
  sub = stream.subset
  if sub.mode == "all":
    return np.arange(n_total)
  if sub.mode == "random":
    return reference_subset(n_total, sub.n, sub.seed)
  if sub.mode == "fixed":
    path = sub.file
    if not path or not os.path.isfile(path):
      raise DatasetError(
          f"stream {stream.name!r}: subset.file {path!r} does not exist; "
          "expected a JSON list of image indices")
    try:
      with open(path) as f:
        ids = json.load(f)
    except json.JSONDecodeError as e:
      raise DatasetError(f"{path}: not valid JSON ({e})") from e
    if isinstance(ids, dict) and "indices" in ids:
      ids = ids["indices"]
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids):
      raise DatasetError(
          f"{path}: expected a JSON list of integer indices (or "
          '{"indices": [...]})')
    bad = [i for i in ids if not 0 <= i < n_total]
    if bad:
      raise DatasetError(
          f"{path}: indices {bad[:5]} are outside [0, {n_total}) (the split "
          "has that many images); the list was made for another dataset")
    if len(set(ids)) != len(ids):
      raise DatasetError(f"{path}: repeats indices; a selection list names "
                         "each image once")
    if sub.n > 0:
      # Selection lists are prefix-consistent: the first n are the
      # n-image selection.
      if len(ids) < sub.n:
        raise DatasetError(
            f"{path}: holds {len(ids)} indices but subset.n={sub.n} labeled "
            "images were asked for; use a longer list or a smaller n")
      ids = ids[:sub.n]
    return np.unique(np.asarray(ids, np.int64))
  raise ValueError(
      f"stream {stream.name!r}: subset.mode={sub.mode!r}; expected all, "
      "random or fixed")


class StreamSource:
  """Random-access view of a prepared split restricted to a stream's subset.

  Element ``i`` is record ``positions[i]`` plus ``is_labeled``; positions -1
  are padding (record 0, blanked after processing).
  """

  def __init__(self, source, positions: np.ndarray, labeled: np.ndarray):
    self._source = source
    self._positions = np.asarray(positions, np.int64)
    self._labeled = np.asarray(labeled, bool)

  def __len__(self) -> int:
    return len(self._positions)

  def __getitem__(self, i: int) -> dict[str, Any]:
    pos = int(self._positions[i])
    rec = dict(self._source[max(pos, 0)])
    rec["is_labeled"] = bool(self._labeled[i])
    rec["is_padding"] = pos < 0
    return rec

  def __repr__(self):
    return f"StreamSource(n={len(self)})"


class _Process(transforms.ProcessSample):
  """ProcessSample that blanks padding elements."""

  def random_map(self, element, rng):
    pad = bool(element["is_padding"])
    out = super().random_map(element, rng)
    return transforms.blank_like(out) if pad else out


def stream_positions(stream, source) -> tuple[np.ndarray, np.ndarray]:
  """Record positions and labeled flags of the samples a stream delivers."""
  n = len(source)
  lab = np.zeros(n, bool)
  lab[labeled_indices(stream, n)] = True
  pos = []
  if stream.load_labeled:
    pos.append(np.flatnonzero(lab))
  if stream.load_unlabeled:
    pos.append(np.flatnonzero(~lab))
  if not pos:
    raise ValueError(f"stream {stream.name!r}: load_labeled and "
                     "load_unlabeled are both False")
  pos = np.concatenate(pos)
  if not len(pos):
    raise DatasetError(f"stream {stream.name!r}: the subset selects no "
                       "samples")
  return pos, lab[pos]


class Loader:
  """Iterable of host batches; ``iterator`` is the checkpointable grain one.

  Attributes:
    iterator: the ``grain.DatasetIterator`` (``get_state``/``set_state``;
      pass it to ``grain.checkpoint.CheckpointSave/Restore``).
    num_batches: batches per pass (evaluation), or None (infinite, train).
    num_samples: samples of the stream before padding/repetition.
  """

  def __init__(self, dataset: grain.IterDataset, num_batches,
               num_samples: int):
    self.dataset = dataset
    self.iterator = iter(dataset)
    self.num_batches = num_batches
    self.num_samples = num_samples

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    return next(self.iterator)

  def get_state(self) -> dict[str, Any]:
    return self.iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.iterator.set_state(state)

  def close(self) -> None:
    close = getattr(self.iterator, "close", None)
    if close is not None:
      close()


# (tfds dir, config name) of the prepared datasets whose source folder this
# process has compared with its record: later loaders of a run (every
# evaluation opens one) do not list the folder again.
_SOURCES_CHECKED: set[tuple[str, str]] = set()


def _prepare_once(stream, data_dir: str):
  """Prepares on process 0 first, so that processes sharing a filesystem do
  not write the same files concurrently; the others then find it prepared
  (or prepare their own copy when ``data_dir`` is host-local)."""
  key = (os.path.abspath(data_dir), builder_lib.config_name(stream))
  check = key not in _SOURCES_CHECKED
  if jax.process_count() == 1:
    builder = builder_lib.prepare(stream, data_dir, check_sources=check)
  else:
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      builder_lib.prepare(stream, data_dir, check_sources=check)
    multihost_utils.sync_global_devices("prepare " + key[1])
    builder = builder_lib.prepare(stream, data_dir, check_sources=check)
  _SOURCES_CHECKED.add(key)
  return builder


def make_dataset(stream, *, split: str, global_batch_size: int, seed: int,
                 train: bool, data_dir: str, process_index: int | None = None,
                 process_count: int | None = None
                 ) -> tuple[grain.IterDataset, int | None, int]:
  """Builds the per-process grain dataset of one stream (host numpy batches).

  Returns:
    ``(dataset, num_batches or None, num_samples)``.
  """
  pidx = jax.process_index() if process_index is None else process_index
  pcount = jax.process_count() if process_count is None else process_count
  if global_batch_size % pcount:
    raise ValueError(f"global batch size {global_batch_size} is not "
                     f"divisible by the number of processes ({pcount})")
  local_bs = global_batch_size // pcount
  builder = _prepare_once(stream, data_dir)
  if split not in builder.info.splits:
    raise DatasetError(
        f"stream {stream.name!r}: split {split!r} was not prepared (folder "
        f"{stream.path} has {sorted(builder.info.splits)})")
  if stream.with_pose and "poses" not in builder.info.features:
    raise DatasetError(
        f"stream {stream.name!r}: with_pose=True but the prepared dataset "
        f"{builder.data_dir} has no 'poses' feature; delete it and prepare "
        "again")
  source = builder.as_data_source(split=split)
  positions, labeled = stream_positions(stream, source)
  num_samples = len(positions)
  num_batches = None
  if not train:
    num_batches = -(-num_samples // global_batch_size)
    pad = num_batches * global_batch_size - num_samples
    positions = np.concatenate([positions, -np.ones(pad, np.int64)])
    labeled = np.concatenate([labeled, np.zeros(pad, bool)])
  ds = grain.MapDataset.source(StreamSource(source, positions, labeled))
  if train:
    ds = ds.seed(seed).shuffle().repeat()
  ds = ds[pidx::pcount]
  h, w = stream.image_size
  proc = _Process(
      image_size=(h, w),
      crop_size=tuple(stream.crop_size) if train else None,
      train=train, flip_prob=stream.flip_prob, color_aug=stream.color_aug,
      intrinsics_mode=stream.intrinsics_mode, num_scales=stream.num_scales,
      with_depth=stream.with_depth, pseudo_depth_dir=stream.pseudo_depth_dir,
      pseudo_depth_encoding=stream.pseudo_depth_encoding,
      centre_index=sorted(stream.frame_offsets).index(0),
      keep_classes=tuple(stream.keep_classes), with_pose=stream.with_pose)
  ds = ds.random_map(proc, seed=seed)
  ds = ds.batch(local_bs, drop_remainder=True)
  ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                             prefetch_buffer_size=2))
  if stream.num_workers > 0:
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=stream.num_workers,
        per_worker_buffer_size=stream.worker_buffer_size))
  return ids, num_batches, num_samples


def make_loader(stream, *, split: str, global_batch_size: int, seed: int,
                train: bool, data_dir: str) -> Loader:
  """The one entry point of the input pipeline.

  Batches are this process's numpy share of each global batch; the trainer
  (``trainer.to_global``) or an evaluator makes them global sharded arrays,
  so every loader returns the same kind of batch.

  Args:
    stream: a stream config (``configs/common.py:stream_config``).
    split: "train", "val" (or "test").
    global_batch_size: batch size over all processes (a multiple of the
      device count when the batches are sharded).
    seed: seeds the shuffle and every per-sample random draw.
    train: shuffled, repeated and augmented; else one padded ordered pass.
    data_dir: tfds data directory (prepared on first use).

  Returns:
    A :class:`Loader`. Batch keys and shapes: docs/design.md (``T`` =
    ``len(frame_offsets)``; ``H, W`` = ``crop_size`` in training, else
    ``image_size``).
  """
  ds, num_batches, num_samples = make_dataset(
      stream, split=split, global_batch_size=global_batch_size, seed=seed,
      train=train, data_dir=data_dir)
  return Loader(ds, num_batches, num_samples)
