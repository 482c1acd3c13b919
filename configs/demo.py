r"""Mode ``demo``: the whole method on MiniCity, on a laptop CPU.

  python -m sdeseg_jax.main --config=configs/demo.py --workdir=/tmp/demo

Stages (each skipped when its output exists, so a rerun resumes; training
stages also resume from their last checkpoint): generate MiniCity
(cityscapes layout = target, gta5 layout = source) into ``<workdir>/data/``,
prepare both as tfds array_record and print statistics, pretrain an SDE on
each domain (``sde_target``, ``sde_source``), export their pseudo
disparities (``pseudo_depth/``), train the two baselines the method improves
on (``target_only``: labeled target CE; ``source_target``: + source CE, the
``baseline`` row) and SSDA with CDM + TDM + MGS and the multi-task SDE loss
(``ssda/``; random labeled subset, no selection), all three with the same
data, labeled subset, seed, batch sizes and step count, then evaluate and
write ``report.md``: the three runs side by side (mIoU, per-class IoU and
the method's differences to each baseline), the target SDE's depth metrics
and error budget (class / distance / row band), prediction and DepthMix
panels (tiles at least ``report.tile_width`` px wide). Measured time and
results: ``docs/benchmarks.md`` (first table, the demo row).

``--config=configs/demo.py:tiny`` (or ``runlocal``, the same) shrinks
everything (CI runs it end to end); other arguments: ``sde_steps``,
``ssda_steps`` (every SSDA run), ``row`` (the method's row of
``configs/ssda_gta.py:ROWS``; the baselines stay), ``seed`` (of every
training run).
"""

from configs import common
from configs import sde_cityscapes
from configs import ssda_minicity

VARIANTS = ("tiny", "tiny,row=cdm_tdm_mgs", "runlocal")

# The demo's networks: narrow ResNet-10 + tiny U-Net decoder, shared by the
# SDEs and the SSDA net so that the SDE weights initialise the latter.
ENCODER_DEPTH = 10
WIDTH = 16

# The baselines the full method is compared with: demo stage (and config
# key) -> row of ``configs/ssda_gta.py:ROWS``.
BASELINES = {"target_only": "target_only", "source_target": "baseline"}


def sde_config(train_stream, val_stream, *, steps: int, lr: float,
               batch_size: int, eval_split: str,
               seed: int = 0) -> common.mlc.ConfigDict:
  """An SDE run on one MiniCity domain (paths are set by the demo)."""
  config = common.mlc.ConfigDict()
  config.mode = "sde"
  config.seed = seed
  offsets = (-1, 0, 1)
  sde_cityscapes.sde_sections(config, train_stream=train_stream,
                              val_stream=val_stream, frame_offsets=offsets)
  config.eval.split = eval_split
  config.eval.batch_size = 4
  config.model = common.model_config(
      "sde", encoder_depth=ENCODER_DEPTH, width=WIDTH, decoder="dec_tiny",
      pose_depth=10)
  config.train = common.train_config(
      num_steps=steps, batch_size=batch_size, log_every=max(1, steps // 10),
      eval_every=0, image_every=0, checkpoint_every=max(1, steps // 2),
      seed=common.same_as(config.get_ref("seed")))
  config.optim = common.optim_config(
      name="adam", lr=lr, schedule="multistep",
      milestones=(max(1, int(steps * 0.75)),), gamma=0.1)
  # Export the raw sigmoid disparity (paper depth scale) of every image of
  # the segmentation stream ``val`` (train and val splits).
  config.export.stream = "val"
  config.export.encoding = "u16"
  config.export.normalize = False
  return config


def ssda_run(row: str, *, n_labeled: int, steps: int, height: int,
             width: int, n_val: int, seed: int) -> common.mlc.ConfigDict:
  """An SSDA run of ``configs/ssda_minicity.py`` at the demo's size."""
  c = ssda_minicity.get_config(
      f"row={row},n={n_labeled},steps={steps},height={height},"
      f"width={width},crop={height},val_count={n_val},seed={seed}")
  c.ssda.batch_target = 4
  c.ssda.batch_source = 4
  c.ssda.batch_unlabeled = 4
  c.train.checkpoint_every = max(1, steps // 2)
  c.train.log_every = max(1, steps // 10)
  return c


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False, runlocal=False, sde_steps=0,
                       ssda_steps=0, row="full", seed=0)
  a.tiny = a.tiny or a.runlocal
  config = common.mlc.ConfigDict()
  config.mode = "demo"
  # The one seed of the three training runs (the MiniCity worlds keep
  # their own fixed seeds: the data, not the run, on purpose).
  config.seed = a.seed
  n_train, n_val = (4, 2) if a.tiny else (24, 6)
  width, height = (64, 32) if a.tiny else (128, 64)
  sde_steps = a.sde_steps or (2 if a.tiny else 300)
  ssda_steps = a.ssda_steps or (2 if a.tiny else 300)
  config.minicity = common.mlc.ConfigDict()
  config.minicity.target = common.minicity_config(
      layout="cityscapes", seed=0, width=width, height=height,
      num_train_sequences=n_train, num_val_sequences=n_val)
  config.minicity.source = common.minicity_config(
      layout="gta5", seed=1, width=width, height=height,
      num_train_sequences=n_train, num_val_sequences=n_val)
  # Paths are filled in by the demo (<workdir>/data/<stream name>).
  crop = (height, height)
  config.data = common.data_config(
      target=common.stream_config(
          "minicity_cityscapes", "cityscapes", frame_offsets=(-1, 0, 1),
          image_size=(height, width), crop_size=crop, with_depth=True,
          full_res=(width, height)),
      source=common.stream_config(
          "minicity_gta5", "gta5", image_size=(height, width),
          crop_size=crop, with_depth=True, val_count=n_val,
          full_res=(width, height)),
  )
  # SDE of each domain: target on its (-1, 0, 1) frames, evaluated against
  # MiniCity's rendered depth; source on the GTASeq-style sequences.
  size = (height, width)
  target_sde = common.stream_config(
      "minicity_cityscapes", "cityscapes", frame_offsets=(-1, 0, 1),
      image_size=size, crop_size=(), color_aug=True,
      full_res=(width, height), num_workers=0)
  target_val = common.stream_config(
      "minicity_cityscapes", "cityscapes", frame_offsets=(-1, 0, 1),
      image_size=size, crop_size=(), with_depth=True,
      full_res=(width, height), num_workers=0)
  source_sde = common.stream_config(
      "minicity_gta5_seq", "gta5", frame_offsets=(-1, 0, 1),
      all_frames=True, image_size=size, crop_size=(), color_aug=True,
      full_res=(width, height), val_count=n_val, num_workers=0)
  source_seg = common.stream_config(
      "minicity_gta5", "gta5", image_size=size, crop_size=(),
      val_count=n_val, full_res=(width, height), num_workers=0,
      num_scales=1)
  bs = 4
  config.sde_target = sde_config(target_sde, target_val, steps=sde_steps,
                                 lr=3e-4, batch_size=bs, eval_split="val",
                                 seed=a.seed)
  config.sde_source = sde_config(source_sde, source_seg, steps=sde_steps,
                                 lr=3e-4, batch_size=bs, eval_split="",
                                 seed=a.seed)
  # SSDA on the two MiniCity domains (data_root = the demo workdir): the
  # full method (``row``) and the two baselines it improves on, the same
  # data, labeled subset, seed, batch sizes and step count.
  n_labeled = 2 if a.tiny else 8
  runs = dict(ssda=a.row, **BASELINES)
  for key, row in runs.items():
    config[key] = ssda_run(row, n_labeled=n_labeled, steps=ssda_steps,
                           height=height, width=width, n_val=n_val,
                           seed=a.seed)
  if a.tiny:
    # CI size: the SDE loss at scale 0 only (a much smaller graph to
    # compile; the full demo keeps the reference's 4 scales).
    for c in (config.sde_target, config.sde_source, config.ssda):
      c.loss.scales = (0,)
  config.report = common.mlc.ConfigDict()
  config.report.num_images = 2 if a.tiny else 4
  # Nearest-neighbour upscaling of the report's panels: every tile at least
  # this many pixels wide.
  config.report.tile_width = 256
  return config
