r"""SSDA GTA5 -> Cityscapes (IJCV §3.5; ssda exps 260/262).

THE MAIN JOB of the project (the full method, exp 262 ``*_depthmix_tdm_cdm_
mg_mtl``: PAD multi-task net initialised from the Cityscapes SDE, labeled
target CE + L_D, source CE, Cross-Domain DepthMix, Target-Domain DepthMix,
Matching Geometry Sampling)::

  python -m sdeseg_jax.main --config=configs/ssda_gta.py \
      --config.data_root=/data --workdir=/runs/ssda_gta

``data_root`` holds (names changeable under ``config.folders``)::

  cityscapes/            leftImg8bit(_small)/, gtFine/, leftImg8bit_sequence/,
                         camera/  (Cityscapes layout)
  gta5/                  images(_small)/, labels/  (GTA5 layout)
  pseudo_depth/cityscapes/  sde_cityscapes.py:export=<depth_scale> output
  pseudo_depth/gta5/        sde_gta.py:export=<depth_scale> output (the
                            GTA5 ``images/``, not the sequence frames)
  sde_cityscapes/        the Cityscapes SDE workdir (init of the PAD net;
                         ``init.checkpoint="auto"``, or ``sde=DIR``)

Arguments (``--config=configs/ssda_gta.py:row=dacs,n=200``):

* ``row``: a row of Table 11 (``ROWS``; the paper's names, note the code's
  swapped CDM/TDM names in the reference's ``experiments.py``):
  ``target_only``, ``baseline`` (source + target CE), ``dacs`` (cross-domain
  ClassMix), ``cdm``, ``tdm``, ``cdm_tdm``,
  ``cdm_tdm_mgs`` (exp 260, transfer head, ImageNet init) and ``full``
  (exp 262, multi-task PAD from the SDE; the default).
* ``n``: labeled target images (100 | 200 | 500 | 2975, Tables 15/16);
  ``labels``: preselected indices (the ``sel`` rows) instead of the
  reference's random subset (``np.random.seed(42)``): a ``mode=select``
  workdir (its ``nlabels{n}_subset.json``) or a JSON list (its first ``n``).
* ``depth_scale``: ``paper`` (both domains' raw SDE disparities, G on
  ``log(1 + 1/D)``) or ``reference`` (code parity: 8-bit min-max normalised
  target, raw 16-bit source, compared as given). The pseudo-depth folders
  must match (``PSEUDO_DEPTH``): ``paper`` = both raw
  sigmoid disparities as u16; ``reference`` = Cityscapes min-max
  normalised u8, source raw u16. The ``export=<depth_scale>`` variant of
  each SDE config writes exactly that, for the *segmentation* images this
  config reads (GTA5 ``images/``, Synthia ``RGB/``, Cityscapes
  ``leftImg8bit/``) at 1024x512.
* ``fs_miou``: the fully-supervised baseline's mIoU (percent) for the
  "relative" column of Tables 15/16.
* ``seed``: the run's seed (initialisation and data order; default 42).
  The random labeled subset keeps the reference's ``np.random.seed(42)``.
* ``runlocal``: 4 steps (LR step and intervals follow the step count).

Command sequence (``docs/reproduce.md``; ``S`` = ``paper`` or
``reference``, the same for every step)::

  # 1. SDEs (Cityscapes stages 0-2 and the source SDE; see their configs).
  python -m sdeseg_jax.main --workdir=/data/sde_cityscapes \
      --config=configs/sde_cityscapes.py:stage=2,path=/data/cityscapes,...
  python -m sdeseg_jax.main --workdir=/runs/sde_gta \
      --config=configs/sde_gta.py:path=/data/gta5,imnet=...,pose_imnet=...
  # 2. Their pseudo depth, into the folders this config reads.
  python -m sdeseg_jax.main --workdir=/data/sde_cityscapes \
      --config=configs/sde_cityscapes.py:stage=2,export=S,\
path=/data/cityscapes --config.export.out_dir=/data/pseudo_depth/cityscapes
  python -m sdeseg_jax.main --workdir=/runs/sde_gta \
      --config=configs/sde_gta.py:export=S,path=/data/gta5 \
      --config.export.out_dir=/data/pseudo_depth/gta5
  # 3. SSDA.
  python -m sdeseg_jax.main --config=configs/ssda_gta.py:depth_scale=S \
      --config.data_root=/data --workdir=/runs/ssda_gta
"""

from configs import common
from configs import ssl_cityscapes
from sdeseg_jax import constants

# The size every SSDA image is resized to (H, W), the training crop and the
# Cityscapes full resolution (W, H). Pseudo depth must be exported at
# IMAGE_SIZE: the pipeline checks it against the resized image.
IMAGE_SIZE = (512, 1024)
CROP_SIZE = (512, 512)
CITYSCAPES_FULL_RES = (2048, 1024)

# depth_scale -> {domain: (encoding, normalize)} of the pseudo-depth files
# SSDA reads (the reference pairs raw source with min-max normalised target
# disparity). The SDE configs' ``export=`` variants write these; the SSDA
# streams read them with the same encoding.
PSEUDO_DEPTH = {
    "paper": {"target": ("u16", False), "source": ("u16", False)},
    "reference": {"target": ("u8", True), "source": ("u16", False)},
}


def pseudo_depth_format(depth_scale: str, domain: str) -> tuple[str, bool]:
  """``(encoding, normalize)`` of a domain's pseudo depth for a depth scale.

  Args:
    depth_scale: ``paper`` or ``reference`` (``config.ssda.depth_scale``).
    domain: ``target`` (Cityscapes) or ``source`` (GTA5 / Synthia).
  """
  if depth_scale not in PSEUDO_DEPTH:
    raise ValueError(f"depth_scale={depth_scale!r}; choose one of "
                     f"{sorted(PSEUDO_DEPTH)}")
  return PSEUDO_DEPTH[depth_scale][domain]


def source_stream(layout: str, **overrides) -> common.mlc.ConfigDict:
  """The source stream of SSDA (``<layout>_seg``: images + labels).

  ``configs/sde_gta.py`` / ``sde_synthia.py`` export their pseudo depth over
  this same stream (no crop), so both prepare the same tfds data and the
  files match the images SSDA reads.
  """
  kw = dict(image_size=IMAGE_SIZE, crop_size=CROP_SIZE,
            pseudo_depth_encoding=pseudo_depth_format("paper", "source")[0])
  kw.update(overrides)
  return common.stream_config(f"{layout}_seg", layout, **kw)


def cityscapes_stream(name: str = "cityscapes_seg",
                      **overrides) -> common.mlc.ConfigDict:
  """A Cityscapes stream of SSDA (target, union, val; export of the SDE)."""
  kw = dict(image_size=IMAGE_SIZE, crop_size=CROP_SIZE,
            full_res=CITYSCAPES_FULL_RES, intrinsics_mode="ssda")
  kw.update(overrides)
  return common.stream_config(name, "cityscapes", **kw)


# Paper rows -> components. ``mtl`` = PAD multi-task net with L_D, SDE init.
ROWS = {
    "target_only": dict(source=False, cdm="none", tdm=False, mgs=False,
                        mtl=False),
    "baseline": dict(source=True, cdm="none", tdm=False, mgs=False,
                     mtl=False),
    "dacs": dict(source=True, cdm="classmix", tdm=False, mgs=False,
                 mtl=False),
    "cdm": dict(source=True, cdm="depthmix", tdm=False, mgs=False,
                mtl=False),
    "tdm": dict(source=True, cdm="none", tdm=True, mgs=False, mtl=False),
    "cdm_tdm": dict(source=True, cdm="depthmix", tdm=True, mgs=False,
                    mtl=False),
    "cdm_tdm_mgs": dict(source=True, cdm="depthmix", tdm=True, mgs=True,
                        mtl=False),
    "full": dict(source=True, cdm="depthmix", tdm=True, mgs=True, mtl=True),
}
LABEL_COUNTS = (100, 200, 500, 2975)

VARIANTS = (
    tuple(f"row={r}" for r in ROWS) +
    tuple(f"n={n}" for n in LABEL_COUNTS) +
    ("depth_scale=reference", "row=baseline,n=2975", "runlocal"))


def ssda_method(row: str, **overrides) -> common.mlc.ConfigDict:
  """The ``config.ssda`` section of a Table 11/13 row."""
  if row not in ROWS:
    raise ValueError(f"unknown row {row!r}; choose one of {sorted(ROWS)}")
  r = ROWS[row]
  c = common.mlc.ConfigDict()
  c.row = row
  c.source = r["source"]          # CE on the source stream
  c.cdm = r["cdm"]                # none | depthmix | classmix (DACS)
  c.tdm = r["tdm"]                # target-domain DepthMix
  c.mgs = r["mgs"]                # Matching Geometry Sampling
  c.multitask = r["mtl"]          # L_D on the labeled target frames
  c.num_candidates = 5            # |C_src| per target sample
  # paper | reference (module docstring); also picks the MGS criterion.
  c.depth_scale = "paper"
  c.margin = 0.03                 # DepthMix margin (normalised disparity)
  c.margin_random_flip = True     # CDM: sign flipped with p 0.5 per pair
  c.tau = constants.PSEUDO_LABEL_TAU  # pseudo-label confidence threshold
  c.augment = "kornia04"          # strong augmentation of mixed images
  # train (reference) | eval (needs train.teacher_batch_stats ema|student)
  c.teacher_mode = "train"
  c.batch_target = 2              # labeled target images per step
  c.batch_source = 2              # source images (pairs) per step
  c.batch_unlabeled = 2           # target union images per step
  c.target_weight = 1.0
  c.source_weight = 1.0
  c.depth_weight = 1.0            # monodepth_lambda
  c.cdm_weight = 1.0
  c.tdm_weight = 1.0
  common.strict_update(c, overrides, "ssda config")
  return c


def ssda_config(*, row: str, target, source, unlabeled, val,
                folders: dict[str, str], model, train, optim,
                eval_batch_size: int = 2, class_subsets=(),
                fs_miou: float = 0.0, relative_to: str = "",
                init_checkpoint: str = "", depth_scale: str = "paper",
                seed: int = 42) -> common.mlc.ConfigDict:
  """Assembles a full ``mode=ssda`` config from its parts.

  ``seed`` is the run's one seed: data order and (through
  ``config.train.seed``, a reference to it) initialisation. The labeled
  subset keeps its own seed on purpose (the reference's fixed
  ``np.random.seed(42)``; ``target.subset.seed``).
  """
  config = common.mlc.ConfigDict()
  config.mode = "ssda"
  config.seed = seed
  train.seed = common.same_as(config.get_ref("seed"))
  config.data_root = ""           # the one folder override (see docstring)
  config.folders = common.mlc.ConfigDict(folders)
  config.data = common.data_config(target=target, source=source,
                                   unlabeled=unlabeled, val=val)
  config.ssda = ssda_method(row, depth_scale=depth_scale)
  config.loss = common.sde_loss_config(
      frame_offsets=tuple(target.frame_offsets))
  config.model = model
  config.train = train
  config.optim = optim
  # Weights of the SDE run (encoder, decoders, pose), train/toolkit.py.
  config.init = common.mlc.ConfigDict()
  config.init.checkpoint = init_checkpoint
  config.init.step = -1
  config.init.parts = ("encoder", "decoders", "pose")
  config.eval = common.mlc.ConfigDict()
  config.eval.split = "val"
  config.eval.batch_size = eval_batch_size
  config.eval.num_batches = 0            # 0 = the whole split
  config.eval.num_images = 4
  config.eval.class_subsets = tuple(class_subsets)  # ((name, ids), ...)
  config.eval.table_classes = ()         # columns of the per-class table
  config.eval.fully_supervised_miou = fs_miou  # percent; 0 = no column
  config.eval.relative_to = relative_to  # "" = miou; or a subset name
  return config


def reference_optim(num_steps, mtl: bool) -> common.mlc.ConfigDict:
  """SGD 1e-2 / encoder 1e-3 (/ pose 1e-6), wd 5e-4, clip 10, x0.1 @ 30k.

  Args:
    num_steps: ``config.train.get_ref("num_steps")``: the LR step is
      ``min(30000, 75% of the steps)`` of whatever the run length becomes.
    mtl: the multi-task row (adds the pose group).
  """
  groups = (("encoder/.*", 1e-3),)
  if mtl:
    groups += (("pose/.*", 1e-6),)
  return common.optim_config(
      name="sgd", lr=1e-2, groups=groups, momentum=0.9, weight_decay=5e-4,
      schedule="step",
      step_size=common.derived(num_steps,
                               lambda n: min(30000, max(1, int(n * 0.75)))),
      gamma=0.1, clip_norm=10.0)


def real_config(arg, *, source_layout: str, source_folder: str,
                class_subsets=(), relative_to: str = ""):
  """Config of a real-data SSDA run (GTA5 or Synthia -> Cityscapes)."""
  a = common.parse_arg(arg, row="full", n=100, labels="", depth_scale="paper",
                       fs_miou=0.0, runlocal=False, imnet="", pose_imnet="",
                       sde="", dtype="float32", seed=42)
  r = ROWS.get(a.row)
  if r is None:
    raise ValueError(f"unknown row {a.row!r}; choose one of {sorted(ROWS)}")
  mtl = r["mtl"]
  target_encoding, _ = pseudo_depth_format(a.depth_scale, "target")
  source_encoding, _ = pseudo_depth_format(a.depth_scale, "source")
  subset = dict(mode="fixed", n=a.n, file=ssl_cityscapes.selection_file(
      a.labels, a.n)) if a.labels else dict(mode="random", n=a.n, seed=42)
  offsets = (-1, 0, 1) if mtl else (0,)

  def cs(name, **kw):
    s = cityscapes_stream(name, **kw)
    s.subset.update(subset)
    return s

  target = cs("cityscapes_ssda" if mtl else "cityscapes_seg",
              frame_offsets=offsets)
  unlabeled = cs("cityscapes_seg", load_unlabeled=True,
                 pseudo_depth_encoding=target_encoding)
  val = cityscapes_stream(crop_size=())
  source = source_stream(source_layout,
                         pseudo_depth_encoding=source_encoding)
  folders = dict(target="cityscapes", unlabeled="cityscapes",
                 val="cityscapes", source=source_folder,
                 source_depth=f"pseudo_depth/{source_folder}",
                 unlabeled_depth="pseudo_depth/cityscapes",
                 sde="sde_cityscapes")
  if mtl:
    model = common.model_config("ssl", dtype=a.dtype)
  else:  # exp 260: transfer head, ImageNet init, no depth / pose
    model = common.model_config("transfer", depth=False, pose=False,
                                dtype=a.dtype)
  model.encoder_init = a.imnet
  model.pose_encoder_init = a.pose_imnet if mtl else ""
  # The reference's off-by-one loop runs 39,999 of its 40k iterations.
  steps = 4 if a.runlocal else 40_000 - 1
  train = common.train_config(
      num_steps=steps, batch_size=None, ema_decay=0.99,
      use_ema=r["cdm"] != "none" or r["tdm"])
  common.set_intervals(train, log=(50, 4), eval_=(2500, 1),
                       checkpoint=(2500, 2))
  config = ssda_config(
      row=a.row, target=target, source=source, unlabeled=unlabeled, val=val,
      folders=folders, model=model, train=train,
      optim=reference_optim(train.get_ref("num_steps"), mtl),
      class_subsets=class_subsets,
      fs_miou=a.fs_miou, relative_to=relative_to,
      init_checkpoint=(a.sde or "auto") if mtl else "",
      depth_scale=a.depth_scale, seed=a.seed)
  if a.runlocal:
    config.eval.num_batches = 1
    for s in (target, unlabeled, source, val):
      s.num_workers = 0
  return config


def get_config(arg=None):
  return real_config(arg, source_layout="gta5", source_folder="gta5")
