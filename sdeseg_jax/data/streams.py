"""Training loaders of several streams, with Matching Geometry candidates.

The SSDA step (``sdeseg_jax.train.ssda``) reads three streams per iteration
(as the reference does): the labeled target subset, the source dataset and the
target union (labeled + unlabeled). ``make_stream_loaders`` builds their
loaders; ``NamedIterators`` zips them into ``{name: batch}``.

Matching Geometry candidates: a stream named in ``candidates`` with
``K`` delivers ``K`` samples per batch element. It is an ordinary loader of
``B * K`` samples per batch (each sample independently shuffled, flipped and
cropped from the stream's seed, like the reference's ``random.choice`` +
augmentation per candidate) whose leaves are reshaped from ``[B * K, ...]``
to ``[B, K, ...]``, so the leading axis stays the batch axis that the mesh
shards and the step can pick the matching candidate with a gather.

Each stream has its own grain iterator seeded with ``seed + 1000 * i``;
``NamedIterators`` checkpoints all positions as one JSON document, so a
resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from sdeseg_jax.data import pipeline


def split_candidates(batch: Any, k: int) -> Any:
  """Reshapes every leaf ``[B * K, ...]`` -> ``[B, K, ...]``.

  Args:
    batch: pytree of numpy arrays with leading size ``B * K``.
    k: candidates per element.

  Returns:
    The same pytree with leaves ``[B, K, ...]``.
  """
  def one(x):
    x = np.asarray(x)
    if x.shape[0] % k:
      raise ValueError(f"candidate batch of {x.shape[0]} samples is not a "
                       f"multiple of K={k}")
    return x.reshape((x.shape[0] // k, k) + x.shape[1:])
  return jax.tree.map(one, batch)


class CandidateLoader:
  """A loader of ``B * K`` samples per batch delivered as ``[B, K, ...]``.

  Proxies ``get_state``/``set_state``/``close`` to the wrapped loader, so
  the position is checkpointed like any other stream.
  """

  def __init__(self, loader: pipeline.Loader, k: int):
    if k < 1:
      raise ValueError(f"candidates per element must be >= 1, got {k}")
    self.loader, self.k = loader, k

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    return split_candidates(next(self.loader), self.k)

  def get_state(self) -> dict[str, Any]:
    return self.loader.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.loader.set_state(state)

  def close(self) -> None:
    self.loader.close()


class NamedIterators:
  """Several data iterators behind one, checkpointed together.

  ``next()`` returns ``{name: next(iterator)}``. ``get_state``/``set_state``
  (JSON bytes of ``{name: state}``) follow grain's protocol for
  non-``DatasetIterator`` items, so ``trainer.fit`` checkpoints and restores
  every stream's position with ``grain.checkpoint.CheckpointSave``.

  Args:
    **iterators: name -> a ``pipeline.Loader`` or anything with
      ``get_state``/``set_state`` (dict states).
  """

  def __init__(self, **iterators):
    if not iterators:
      raise ValueError("NamedIterators needs at least one iterator")
    self.iterators = iterators

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    return {k: next(v) for k, v in self.iterators.items()}

  def get_state(self) -> bytes:
    return json.dumps({k: v.get_state() for k, v in self.iterators.items()},
                      sort_keys=True).encode()

  def set_state(self, state: bytes | str | dict) -> None:
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    missing = set(self.iterators) - set(state)
    if missing:
      raise ValueError(f"iterator checkpoint lacks streams {sorted(missing)}"
                       f" (has {sorted(state)})")
    for k, v in self.iterators.items():
      v.set_state(state[k])

  def start_prefetch(self) -> None:
    """Called by grain after a restore; the loaders prefetch on demand."""

  def close(self) -> None:
    for v in self.iterators.values():
      close = getattr(v, "close", None)
      if close is not None:
        close()


def make_stream_loaders(streams: Mapping[str, Any],
                        batch_sizes: Mapping[str, int], *, seed: int,
                        data_dir: str, split: str = "train",
                        candidates: Mapping[str, int] | None = None
                        ) -> dict[str, Any]:
  """Builds one training loader per stream (host numpy batches).

  Args:
    streams: ``{name: stream config}`` with ``path`` set.
    batch_sizes: ``{name: global batch size B}`` (before the K axis).
    seed: base seed; stream ``i`` (in the order of ``streams``) uses
      ``seed + 1000 * i`` so the streams draw independent orders.
    data_dir: tfds directory.
    split: the split to read.
    candidates: ``{name: K}``; that stream is read ``B * K`` at a time and
      delivered as ``[B, K, ...]`` (:class:`CandidateLoader`).

  Returns:
    ``{name: loader}``; zip them with ``NamedIterators`` (which
    checkpoints all positions together); ``trainer.fit`` shards the batches.
  """
  candidates = dict(candidates or {})
  unknown = set(candidates) - set(streams)
  if unknown:
    raise ValueError(f"candidates for unknown streams {sorted(unknown)}; "
                     f"streams are {sorted(streams)}")
  loaders = {}
  for i, (name, stream) in enumerate(streams.items()):
    k = candidates.get(name, 1)
    loader = pipeline.make_loader(
        stream, split=split, global_batch_size=batch_sizes[name] * k,
        seed=seed + 1000 * i, train=True, data_dir=data_dir)
    loaders[name] = CandidateLoader(loader, k) if name in candidates else (
        loader)
  return loaders
