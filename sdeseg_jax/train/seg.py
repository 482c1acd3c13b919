"""Several data iterators behind one (``NamedIterators``).

The segmentation pieces that used to live here moved to where they belong:
the supervised CE and the weight copying to ``train/toolkit.py``, the
mixing (masks, targets, the consistency loss, ``config.mix``) to
``mixing/consistency.py``, the teacher forward to ``mixing/teacher.py``.
"""

from __future__ import annotations

import json
from typing import Any, Iterator


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
