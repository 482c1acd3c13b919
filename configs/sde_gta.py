r"""Source-domain SDE on GTA sequences (ssda exp 310).

  python -m sdeseg_jax.main --config=configs/sde_gta.py:path=/data/gta5,\
imnet=/w/resnet101.npz,pose_imnet=/w/resnet18_x2.npz --workdir=/runs/sde_gta

Then the pseudo depth SSDA reads (``configs/ssda_gta.py``): the
``export=<depth_scale>`` variant runs ``mode=export_depth`` over the GTA5
*segmentation* images (``images/``, stream ``config.data.seg`` =
``ssda_gta.source_stream``: frame offset 0, 1024x512, no crop, flip or
colour augmentation, train and val splits), raw sigmoid disparity as u16
(both depth scales use the raw source disparity, as in the reference)::

  python -m sdeseg_jax.main --config=configs/sde_gta.py:export=paper,\
path=/data/gta5 --workdir=/runs/sde_gta \
      --config.export.out_dir=/data/pseudo_depth/gta5

``/data`` is the SSDA run's ``data_root``; the files land where its source
stream looks (``<data_root>/pseudo_depth/gta5/images/<name>.png``).

ResNet-101 **OS32** + dec11 + R18 pose net (ImageNet), Adam 1e-4 with
``backbone_lr`` 1e-5 and ``pose_lr`` 1e-4, x0.1 MultiStep at 160k, 350k its,
batch 4, 512x512 crops of the 1024x512 frames, colour augmentation, every
sequence frame with both neighbours, the corrected (ssda) intrinsics of the
dataset (GTASeq fx=1.206285, fy=2.144507, principal point at the centre, as
fractions of the image size), no feature distance. The reference feeds the
pose net *uncropped* frames (``provide_uncropped_for_pose``); this port feeds
it the crop (optional in the task description).

Arguments: ``path``, ``imnet``, ``pose_imnet`` (encoder weights),
``dtype``, ``export``, ``seed`` (initialisation and data order),
``runlocal`` (10 steps, milestone and intervals scaled down).
"""

from configs import common
from configs import sde_cityscapes
from configs import ssda_gta

VARIANTS = ("runlocal", "export=paper", "export=reference")

LAYOUT = "gta5"
INTRINSICS = (1.206285, 2.144507, 0.5, 0.5)


def source_sde_config(arg, layout, intrinsics, name):
  sde_cityscapes.parse_export(arg)
  a = common.parse_arg(arg, runlocal=False, path="", imnet="",
                       pose_imnet="", dtype="float32", export="", seed=0)
  config = common.mlc.ConfigDict()
  config.mode = "sde"
  config.seed = a.seed
  offsets = (-1, 0, 1)
  train_stream = common.stream_config(
      f"{name}_sde", layout, path=a.path, frame_offsets=offsets,
      all_frames=True, image_size=(512, 1024), crop_size=(512, 512),
      color_aug=True, intrinsics=intrinsics, intrinsics_mode="ssda")
  val_stream = common.stream_config(
      f"{name}_sde_val", layout, path=a.path, frame_offsets=offsets,
      all_frames=True, image_size=(512, 1024), crop_size=(),
      intrinsics=intrinsics, intrinsics_mode="ssda")
  sde_cityscapes.sde_sections(config, train_stream=train_stream,
                              val_stream=val_stream, frame_offsets=offsets)
  # The segmentation images SSDA trains on; mode=export_depth writes their
  # pseudo depth in the source format of every SSDA depth scale.
  config.data.seg = ssda_gta.source_stream(layout, path=a.path,
                                           crop_size=(), flip_prob=0.0)
  sde_cityscapes.export_for_ssda(config, "seg", "source", a.export,
                                 default="paper")
  config.eval.split = ""  # no depth ground truth for the source datasets
  config.model = common.model_config(
      "sde_source", encoder_init=a.imnet, pose_encoder_init=a.pose_imnet,
      dtype=a.dtype)
  full_steps = 350_000 - 1
  steps = 10 if a.runlocal else full_steps
  config.train = common.train_config(
      num_steps=steps, batch_size=4, eval_every=0, image_every=0,
      seed=common.same_as(config.get_ref("seed")))
  n = config.train.get_ref("num_steps")
  config.train.log_every = common.every(n, 100, 10)
  config.train.checkpoint_every = common.every(n, 5000, 2)
  config.optim = common.optim_config(
      name="adam", lr=1e-4, groups=(("encoder/.*", 1e-5), ("pose/.*", 1e-4)),
      schedule="multistep",
      milestones=(sde_cityscapes.scaled_milestone(160_000, steps,
                                                  full_steps),),
      gamma=0.1)
  return config


def get_config(arg=None):
  return source_sde_config(arg, LAYOUT, INTRINSICS, "gta5")
