"""Label tables of Cityscapes, GTA5, Synthia and CamVid.

Cityscapes *label ids* (0..33, what ``gtFine_labelIds.png`` stores) are
mapped to the 19 *train ids* (0..18) with a 256-entry lookup table whose
default is the ignore index 250, as the reference loaders do. GTA5 label files are palette PNGs whose indices are Cityscapes label
ids, so they share the Cityscapes table. Synthia's
``synthia_mapped_to_cityscapes`` files store Synthia class ids with their own
table. The IJCV paper scores Synthia on 16 and 13 of the 19 classes; the index
sets are here too.

All tables are numpy arrays or plain tuples so that the data pipeline, the
evaluators and the MiniCity generator can import them without JAX.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdeseg_jax.constants import IGNORE_INDEX
NUM_CLASSES = 19


@dataclasses.dataclass(frozen=True)
class Label:
  """One Cityscapes label.

  Attributes:
    name: Cityscapes label name.
    id: label id as stored in ``*_gtFine_labelIds.png`` (-1: license plate).
    train_id: 0..18 for evaluated classes, IGNORE_INDEX otherwise.
    category: Cityscapes category name.
    color: RGB colour of the official colour coding.
  """
  name: str
  id: int
  train_id: int
  category: str
  color: tuple[int, int, int]


_I = IGNORE_INDEX
# The official Cityscapes label definition (cityscapesScripts labels.py),
# with trainId 255 replaced by the reference's ignore index 250.
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, _I, "void", (0, 0, 0)),
    Label("ego vehicle", 1, _I, "void", (0, 0, 0)),
    Label("rectification border", 2, _I, "void", (0, 0, 0)),
    Label("out of roi", 3, _I, "void", (0, 0, 0)),
    Label("static", 4, _I, "void", (0, 0, 0)),
    Label("dynamic", 5, _I, "void", (111, 74, 0)),
    Label("ground", 6, _I, "void", (81, 0, 81)),
    Label("road", 7, 0, "flat", (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", (244, 35, 232)),
    Label("parking", 9, _I, "flat", (250, 170, 160)),
    Label("rail track", 10, _I, "flat", (230, 150, 140)),
    Label("building", 11, 2, "construction", (70, 70, 70)),
    Label("wall", 12, 3, "construction", (102, 102, 156)),
    Label("fence", 13, 4, "construction", (190, 153, 153)),
    Label("guard rail", 14, _I, "construction", (180, 165, 180)),
    Label("bridge", 15, _I, "construction", (150, 100, 100)),
    Label("tunnel", 16, _I, "construction", (150, 120, 90)),
    Label("pole", 17, 5, "object", (153, 153, 153)),
    Label("polegroup", 18, _I, "object", (153, 153, 153)),
    Label("traffic light", 19, 6, "object", (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", (107, 142, 35)),
    Label("terrain", 22, 9, "nature", (152, 251, 152)),
    Label("sky", 23, 10, "sky", (70, 130, 180)),
    Label("person", 24, 11, "human", (220, 20, 60)),
    Label("rider", 25, 12, "human", (255, 0, 0)),
    Label("car", 26, 13, "vehicle", (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", (0, 60, 100)),
    Label("caravan", 29, _I, "vehicle", (0, 0, 90)),
    Label("trailer", 30, _I, "vehicle", (0, 0, 110)),
    Label("train", 31, 16, "vehicle", (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    Label("license plate", -1, _I, "vehicle", (0, 0, 142)),
)
del _I

NAME_TO_LABEL: dict[str, Label] = {l.name: l for l in LABELS}
ID_TO_LABEL: dict[int, Label] = {l.id: l for l in LABELS}

# Label ids of the 19 evaluated classes, in train-id order.
TRAIN_LABEL_IDS: tuple[int, ...] = tuple(
    l.id for l in sorted((l for l in LABELS if l.train_id != IGNORE_INDEX),
                         key=lambda l: l.train_id))
CLASS_NAMES: tuple[str, ...] = tuple(
    ID_TO_LABEL[i].name for i in TRAIN_LABEL_IDS)
# [19, 3] uint8 colour of each train id.
TRAIN_ID_COLORS = np.array(
    [ID_TO_LABEL[i].color for i in TRAIN_LABEL_IDS], np.uint8)

# {label id: train id} of the 19 classes; shared by Cityscapes and GTA5.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    i: t for t, i in enumerate(TRAIN_LABEL_IDS)}
GTA5_ID_TO_TRAINID: dict[int, int] = dict(CITYSCAPES_ID_TO_TRAINID)
# [256] uint8 train id -> Cityscapes label id (the inverse of
# CITYSCAPES_ID_TO_TRAINID); other values (ignore) -> 0, "unlabeled".
TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)
TRAIN_ID_TO_LABEL_ID[:len(TRAIN_LABEL_IDS)] = TRAIN_LABEL_IDS

# Synthia class id -> train id (the reference's synthia_seg_loader.py).
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
# Synthia ids of classes outside the 19 (void 0, parking-slot 13,
# road-work 14, lanemarking 22); used to write void Cityscapes ids.
SYNTHIA_VOID_ID = 0
SYNTHIA_PARKING_ID = 13

# The IJCV Synthia protocols, as train ids.
SYNTHIA_13_TRAIN_IDS: tuple[int, ...] = (
    0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA_16_TRAIN_IDS: tuple[int, ...] = tuple(
    sorted(SYNTHIA_13_TRAIN_IDS + (3, 4, 5)))

# CamVid (SegNet layout): ids 0..10 are classes, 11 is "unlabelled" -> 250.
# [BUG] The reference builds a 12-way head for it.
CAMVID_CLASS_NAMES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol",
    "fence", "car", "pedestrian", "bicyclist")
CAMVID_UNLABELED_ID = 11
CAMVID_REFERENCE_NUM_CLASSES = 12


def _lut(mapping: dict[int, int]) -> np.ndarray:
  lut = np.full(256, IGNORE_INDEX, np.uint8)
  for k, v in mapping.items():
    lut[k] = v
  lut.flags.writeable = False
  return lut


# [256] uint8 lookup tables: raw file value -> train id (default 250).
CITYSCAPES_ID_TO_TRAINID_LUT = _lut(CITYSCAPES_ID_TO_TRAINID)
GTA5_ID_TO_TRAINID_LUT = CITYSCAPES_ID_TO_TRAINID_LUT
SYNTHIA_ID_TO_TRAINID_LUT = _lut(SYNTHIA_ID_TO_TRAINID)
CAMVID_ID_TO_TRAINID_LUT = _lut({i: i for i in range(len(CAMVID_CLASS_NAMES))})


def _cityscapes_to_synthia_lut() -> np.ndarray:
  """[256] uint8: Cityscapes label id -> Synthia class id (void 0)."""
  lut = np.full(256, SYNTHIA_VOID_ID, np.uint8)
  for synthia_id, train_id in SYNTHIA_ID_TO_TRAINID.items():
    lut[TRAIN_LABEL_IDS[train_id]] = synthia_id
  lut[NAME_TO_LABEL["parking"].id] = SYNTHIA_PARKING_ID
  lut.flags.writeable = False
  return lut


CITYSCAPES_ID_TO_SYNTHIA_ID_LUT = _cityscapes_to_synthia_lut()


def _label_id_palette() -> np.ndarray:
  """[256, 3] uint8: colour of each Cityscapes label id (black if none)."""
  pal = np.zeros((256, 3), np.uint8)
  for l in LABELS:
    if l.id >= 0:
      pal[l.id] = l.color
  pal.flags.writeable = False
  return pal


# Palette of GTA5-style "P" label PNGs: index = Cityscapes label id.
LABEL_ID_PALETTE = _label_id_palette()


def _check_uint(array: np.ndarray, what: str) -> np.ndarray:
  array = np.asarray(array)
  if not np.issubdtype(array.dtype, np.integer):
    raise TypeError(f"{what}: expected an integer array, got {array.dtype}")
  if array.size and (array.min() < 0 or array.max() > 255):
    raise ValueError(
        f"{what}: values must lie in [0, 255], got [{array.min()}, "
        f"{array.max()}]")
  return array


def cityscapes_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
  """Maps Cityscapes (or GTA5) label ids to train ids.

  Args:
    label_ids: integer array of any shape with values in [0, 255].

  Returns:
    uint8 array of the same shape; 0..18, or 250 for void ids.
  """
  ids = _check_uint(label_ids, "cityscapes_to_train_ids")
  return CITYSCAPES_ID_TO_TRAINID_LUT[ids]


def synthia_to_train_ids(synthia_ids: np.ndarray) -> np.ndarray:
  """Maps Synthia class ids to train ids (uint8, same shape, 250 = void)."""
  ids = _check_uint(synthia_ids, "synthia_to_train_ids")
  return SYNTHIA_ID_TO_TRAINID_LUT[ids]


def camvid_to_train_ids(camvid_ids: np.ndarray) -> np.ndarray:
  """Maps CamVid ids 0..10 to themselves and everything else to 250."""
  ids = _check_uint(camvid_ids, "camvid_to_train_ids")
  return CAMVID_ID_TO_TRAINID_LUT[ids]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
  """Colours a train-id map for display.

  Args:
    train_ids: [H, W] integer train ids; anything outside 0..18 is ignore.

  Returns:
    [H, W, 3] uint8 RGB; ignore pixels are black.
  """
  t = np.asarray(train_ids)
  out = np.zeros(t.shape + (3,), np.uint8)
  valid = (t >= 0) & (t < NUM_CLASSES)
  out[valid] = TRAIN_ID_COLORS[t[valid]]
  return out
