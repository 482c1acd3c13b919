"""The one registry of dataset layouts: folders, splits, label tables, camera.

Every part of the data layer that depends on the layout reads it here: the
readers (label ids and their train-id tables, default intrinsics), the tfds
builder (which splits it prepares) and the folder checks of
``sdeseg_jax.data.resolve`` (which sub-folders identify a layout). The
per-layout file naming itself is ``readers.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdeseg_jax.data import labels as labels_lib


@dataclasses.dataclass(frozen=True)
class Layout:
  """What identifies and describes one dataset layout.

  Attributes:
    name: the ``stream.layout`` value.
    image_folders: sub-folders of the root holding the images (one of them
      must exist; ``*_small`` are the reference's preprocessed copies).
    label_folders: sub-folders holding the labels (one of them must exist
      for a labeled stream).
    splits: the splits the builder prepares (a missing optional one is
      skipped).
    raw_ids: label values a label file may contain.
    train_id_lut: [256] raw id -> train id (250 = ignore).
    intrinsics: default ``(fx/W, fy/H, cx/W, cy/H)`` of the full-resolution
      images, for datasets without per-image camera files.
    full_res: that resolution ``(W, H)``.
  """
  name: str
  image_folders: tuple[str, ...]
  label_folders: tuple[str, ...]
  splits: tuple[str, ...]
  raw_ids: frozenset[int]
  train_id_lut: np.ndarray
  intrinsics: tuple[float, float, float, float]
  full_res: tuple[int, int]


_CITYSCAPES_IDS = frozenset(l.id for l in labels_lib.LABELS if l.id >= 0)

LAYOUTS: dict[str, Layout] = {l.name: l for l in (
    Layout("cityscapes", ("leftImg8bit", "leftImg8bit_small"), ("gtFine",),
           ("train", "val"), _CITYSCAPES_IDS,
           labels_lib.CITYSCAPES_ID_TO_TRAINID_LUT,
           (2262.52 / 2048, 2265.30179 / 1024, 1096.98 / 2048,
            513.137 / 1024), (2048, 1024)),
    # GTA5 label PNGs hold Cityscapes label ids.
    Layout("gta5", ("images", "images_small"), ("labels",), ("train", "val"),
           _CITYSCAPES_IDS, labels_lib.GTA5_ID_TO_TRAINID_LUT,
           (1.206285, 2.144507, 0.5, 0.5), (1920, 1080)),
    Layout("synthia", ("RGB", "RGB_small"), ("synthia_mapped_to_cityscapes",),
           ("train", "val"), frozenset(range(23)),
           labels_lib.SYNTHIA_ID_TO_TRAINID_LUT,
           (532.740352 / 1280, 532.740352 / 760, 0.5, 0.5), (1280, 760)),
    # CamVid has no calibration in the reference; a 480x360 placeholder
    # camera with a 60 degree horizontal field of view. Not used by any loss.
    Layout("camvid", ("train",), ("trainannot",), ("train", "val", "test"),
           frozenset(range(labels_lib.CAMVID_UNLABELED_ID + 1)),
           labels_lib.CAMVID_ID_TO_TRAINID_LUT,
           (0.866, 1.155, 0.5, 0.5), (480, 360)),
)}
NAMES = tuple(LAYOUTS)


def get(name: str, key: str = "layout") -> Layout:
  """The layout called ``name``; ``key`` (the config key) names the error.

  Raises:
    ValueError: an unknown layout.
  """
  if name not in LAYOUTS:
    raise ValueError(f"{key}={name!r}: unknown layout; expected one of "
                     f"{NAMES}")
  return LAYOUTS[name]
