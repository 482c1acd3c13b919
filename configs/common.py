"""Shared config pieces. Each ``*_config`` function builds one section.

Config files call these and override what differs, so that a key is defined
in one place and every config that uses it gets the same name and default.
Follows big_vision's ``parse_arg`` convention for ``--config=file.py:arg``.
"""

from __future__ import annotations

import ml_collections as mlc


def parse_arg(arg: str | None, **spec):
  """Parses ``"k1=v1,k2"`` into a ConfigDict with defaults and types of spec.

  A bare ``k`` sets a boolean ``k`` to True. Unknown keys raise, naming the
  key and the known ones.
  """
  res = mlc.ConfigDict(spec)
  if arg:
    for part in arg.split(","):
      if not part:
        continue
      key, _, value = part.partition("=")
      if key not in spec:
        raise ValueError(
            f"unknown config argument {key!r}; known: {sorted(spec)}")
      default = spec[key]
      if not value:
        value = True
      elif isinstance(default, bool):
        value = value.lower() in ("1", "true", "yes")
      elif default is not None:
        value = type(default)(value)
      res[key] = value
  return res


def minicity_config(**overrides) -> mlc.ConfigDict:
  """Generation settings of a MiniCity dataset (see sdeseg_jax/data/minicity)."""
  c = mlc.ConfigDict()
  c.layout = "cityscapes"   # cityscapes | gta5 | synthia
  c.seed = 0
  c.width = 256             # 1/4 of the preprocessed 1024x512 per side
  c.height = 128
  c.num_train_sequences = 24
  c.num_val_sequences = 6
  c.frames_per_sequence = 3  # rendered frames around the annotated one
  c.update(overrides)
  return c
