"""Mode ``demo``: the project end to end on MiniCity, as resumable stages.

Stages, in order; each records completion (a marker file or its output) and
is skipped on a rerun in the same workdir:

1. ``generate``: MiniCity datasets of ``config.minicity`` (``target``:
   cityscapes layout, ``source``: gta5 layout) into ``<workdir>/data/<stream
   name>``.
2. ``prepare``: tfds array_record preparation of every stream of
   ``config.data`` (``<workdir>/tfds``), plus their statistics (counts per
   split, class pixel frequencies, image sizes, intrinsics), printed and
   stored as ``<workdir>/stats_<tfds config>.json``.

Later stages (SDE pretraining, pseudo-depth export, training, evaluation)
are appended to ``STAGES``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from absl import logging

from sdeseg_jax.data import prepare as prepare_lib

_ROLES = ("target", "source")


def data_root(workdir: str, stream) -> str:
  return os.path.join(workdir, "data", stream.name)


def streams_with_paths(config, workdir: str) -> dict[str, Any]:
  """The demo's streams with ``path`` set to their generated folders."""
  return {role: prepare_lib.with_overrides(
      config.data[role], path=data_root(workdir, config.data[role]))
          for role in _ROLES}


def stage_generate(config, workdir: str, log) -> None:
  from sdeseg_jax.data import minicity  # pylint: disable=g-import-not-at-top
  for role in _ROLES:
    stream = config.data[role]
    out = data_root(workdir, stream)
    marker = out + ".done"
    if os.path.isfile(marker):
      log(f"[generate] {out} exists, skipped")
      continue
    mc = config.minicity[role]
    if mc.layout != stream.layout:
      raise ValueError(
          f"config.minicity.{role}.layout={mc.layout!r} but "
          f"config.data.{role}.layout={stream.layout!r}")
    log(f"[generate] MiniCity {mc.layout} -> {out}")
    minicity.generate(
        out, layout=mc.layout, seed=mc.seed, width=mc.width,
        height=mc.height, num_train_sequences=mc.num_train_sequences,
        num_val_sequences=mc.num_val_sequences,
        frames_per_sequence=mc.frames_per_sequence,
        # No marker means no finished run: a partial folder from an
        # interrupted one is replaced.
        overwrite=True)
    with open(marker, "w") as f:
      f.write("done\n")


def stage_prepare(config, workdir: str, log) -> None:
  data_dir = prepare_lib.tfds_dir(config, workdir)
  for role, stream in streams_with_paths(config, workdir).items():
    log(f"[prepare] {role}: {stream.name}")
    prepare_lib.prepare_stream(stream, data_dir, workdir, log=log)


STAGES: tuple[tuple[str, Callable[..., None]], ...] = (
    ("generate", stage_generate),
    ("prepare", stage_prepare),
)


def run(config, workdir: str, log=print) -> None:
  """Runs every stage of the demo in ``workdir`` (resumable)."""
  os.makedirs(os.path.join(workdir, "data"), exist_ok=True)
  for name, fn in STAGES:
    logging.info("demo stage %s", name)
    fn(config, workdir, log)
