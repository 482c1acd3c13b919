"""Where a run's data comes from: the one data-resolution layer of all modes.

A stream's dataset root is resolved once, here, by every mode:

* ``config.data.<key>.path`` set: the user's dataset. It is only ever read:
  checked at once against its layout (``check_folder``, the error names the
  key), never written, generated into or deleted.
* empty, and the config has a ``minicity`` section: MiniCity is generated
  into the run's workdir, ``<workdir>/data/<folder>`` (``generated_root``),
  once: a done-marker ``<root>.done`` written after a finished generation
  makes later runs (and resumes) reuse it; without the marker a partial
  folder from an interrupted generation is replaced.
* empty otherwise: an error naming the key.

SSDA runs name their folders relative to ``config.data_root``
(``config.folders.<role>``); ``data_root_streams`` fills and checks those.
The layouts themselves (which sub-folders, splits and label tables) are the
registry ``sdeseg_jax.data.layouts``.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Sequence

from absl import logging

from sdeseg_jax.data import layouts as layouts_lib

DONE_SUFFIX = ".done"

# How an error describes each SSDA role's dataset.
_ROLE_NAMES = {"target": "target dataset (labeled subset)",
               "unlabeled": "target dataset (union)",
               "source": "source dataset", "val": "target validation data"}


def with_overrides(stream, **kw):
  """A copy of a stream config with some keys replaced (or added)."""
  s = copy.deepcopy(stream)
  with s.unlocked():
    for k, v in kw.items():
      s[k] = v
  return s


def generated_root(workdir: str, folder: str) -> str:
  """Where a run generates a dataset: ``<workdir>/data/<folder>``."""
  return os.path.join(workdir, "data", folder)


def is_generated(root: str) -> bool:
  """Whether a generation into ``root`` finished (its done-marker exists)."""
  return os.path.isfile(root + DONE_SUFFIX)


def ensure_minicity(mc_config, root: str,
                    log: Callable[[str], Any] | None = logging.info) -> bool:
  """Generates MiniCity into ``root`` unless a finished generation is there.

  Only for folders the run owns (its workdir, or a folder named for
  generation): a partial folder of an interrupted generation (MiniCity
  sidecar, no marker) is replaced.

  Args:
    mc_config: ``configs/common.py:minicity_config()``.
    root: the dataset folder to create.
    log: progress printer, or None.

  Returns:
    True if it generated, False if a finished generation was reused.
  """
  # pylint: disable-next=g-import-not-at-top
  from sdeseg_jax.data import minicity
  if is_generated(root):
    return False
  if log:
    log(f"generating MiniCity {mc_config.layout} into {root}")
  minicity.generate_from_config(mc_config, root, overwrite=True, log=log)
  with open(root + DONE_SUFFIX, "w") as f:
    f.write("done\n")
  return True


def check_folder(path: str, layout: str, *, key: str, what: str = "",
                 labels: bool = False, all_frames: bool = False,
                 hint: str = "") -> None:
  """Fails at once, naming the config key and the layout, if ``path`` is not
  a dataset root of ``layout``.

  Args:
    path: the folder.
    layout: the stream's layout (``layouts.LAYOUTS``).
    key: the config key ``path`` came from (named in the error).
    what: what the folder should hold, for the message (e.g. "source
      dataset"); default "dataset".
    labels: the stream reads labels, so a label folder must exist too.
    all_frames: the stream reads sequence folders, which GTA5 and SYNTHIA
      may keep outside the image folders (only the root is checked then).
    hint: what to do, ending the message; default "set <key> to its
      folder".

  Raises:
    FileNotFoundError: the folder or a layout sub-folder is missing.
  """
  lay = layouts_lib.get(layout, key.rsplit(".", 1)[0] + ".layout")
  what = what or "dataset"
  hint = hint or f"set {key} to its folder"
  expected = []
  if not (all_frames and layout != "cityscapes"):
    expected.append(lay.image_folders)
  if labels:
    expected.append(lay.label_folders)
  want = ", ".join("|".join(f + "/" for f in alts) for alts in expected)
  if not path or not os.path.isdir(path):
    raise FileNotFoundError(
        f"{key}={path!r} does not exist: expected the {what} in the "
        f"{layout} layout" + (f" ({want})" if want else "") + f"; {hint}")
  for alts in expected:
    if not any(os.path.isdir(os.path.join(path, f)) for f in alts):
      raise FileNotFoundError(
          f"{key}={path!r} is not a {layout} folder: expected the {what} "
          f"with {want}, found none of {list(alts)}; {hint}")


def dataset_root(config, key: str, workdir: str, *,
                 folder: str | None = None, labels: bool = False,
                 log: Callable[[str], Any] | None = logging.info) -> str:
  """The dataset root of stream ``config.data.<key>`` (see module docstring).

  Args:
    config: a mode's config; ``config.minicity`` (optional) says what to
      generate when the path is empty.
    key: the stream's key under ``config.data``.
    workdir: the run's workdir (generation target).
    folder: the generated folder's name under ``<workdir>/data``; default
      the stream's name.
    labels: the stream reads labels (checked in a given folder).
    log: progress printer for a generation.

  Returns:
    The folder to read.

  Raises:
    FileNotFoundError: a given path is not a dataset of the stream's
      layout, or the path is empty and nothing generates it.
    ValueError: the MiniCity layout differs from the stream's.
  """
  stream = config.data[key]
  path_key = f"config.data.{key}.path"
  if stream.path:
    hint = f"set {path_key} to the dataset's folder"
    if "minicity" in config:
      hint += (" (a path given as data is only read; leave it empty to "
               "generate MiniCity into the workdir)")
    check_folder(stream.path, stream.layout, key=path_key, labels=labels,
                 all_frames=bool(stream.all_frames), hint=hint)
    return stream.path
  if "minicity" not in config:
    raise FileNotFoundError(
        f"{path_key} is empty: set it to the {stream.layout} dataset root")
  mc = config.minicity
  if mc.layout != stream.layout:
    raise ValueError(
        f"config.minicity.layout={mc.layout!r} but config.data.{key}.layout="
        f"{stream.layout!r}: MiniCity would not match the stream")
  root = generated_root(workdir, folder or stream.name)
  ensure_minicity(mc, root, log=log)
  return root


def data_root_streams(config, roles: Sequence[str],
                      depth_roles: Sequence[str] = ()) -> dict[str, Any]:
  """SSDA streams with paths filled in from ``config.data_root`` and checked.

  A stream with an empty ``path`` reads ``<data_root>/<config.folders.
  <role>>``; the ``depth_roles`` with an empty ``pseudo_depth_dir`` read
  ``<data_root>/<config.folders.<role>_depth>``. Every dataset folder is
  checked at once (``check_folder``, with labels); the pseudo-depth files
  are checked by the caller (``train.export.check_pseudo_depth``).

  Returns:
    ``{role: stream config copy}``.

  Raises:
    FileNotFoundError: naming the dataset, its layout and the folder.
  """
  out = {}
  for role in roles:
    s = copy.deepcopy(config.data[role])
    with s.unlocked():
      if not s.path:
        s.path = os.path.join(config.data_root, config.folders[role])
      if role in depth_roles and not s.pseudo_depth_dir:
        s.pseudo_depth_dir = os.path.join(config.data_root,
                                          config.folders[role + "_depth"])
    check_folder(s.path, s.layout, key=f"config.data.{role}.path",
                 what=_ROLE_NAMES.get(role, role), labels=True,
                 hint=f"set --config.data_root or --config.data.{role}.path")
    out[role] = s
  return out
