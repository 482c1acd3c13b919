r"""SDE pretraining on Cityscapes sequences (the reference's master stages).

  python -m sdeseg_jax.main --config=configs/sde_cityscapes.py:stage=2,\
path=/data/cityscapes,init=/runs/sde_stage1,imnet=/w/resnet101.npz \
      --workdir=/runs/sde_stage2

Stages (variants ``stage=0|1|2``), all ResNet-101 OS16 + dec6 + R18 pose net,
frames (-1, 0, 1), 4 scales, Adam with x0.1 MultiStep at 160k, flip and SDE
colour augmentation, every sequence frame with both neighbours:

* 0: uncropped 1024x512, batch 2, 300k its, lr 1e-4, encoder frozen (BN in
  train mode), ImageNet encoder and pose encoder;
* 1: 512x512 crops, batch 4, 300k its, lr 1e-4, encoder frozen, pose net
  from stage 0 (``init=`` its workdir), depth decoder from scratch;
* 2: 512x512, batch 4, 100k its, lr 1e-5 everywhere, encoder re-initialised
  from ImageNet, depth decoder and pose net from stage 1, ImageNet feature
  distance lambda_F = 1e-2 (``fd=0``: the no-feature-distance ablation).

``num_steps = train_iters - 1``: the reference loop exits one step early
(an off-by-one loop exit). Intrinsics default to the master (CVPR) K
(``master_k``: full-resolution K on half-resolution images) that produced
the released checkpoints.
The reference trains stage 2 with AMP; this port stays fp32 unless
``dtype=bfloat16``. ``seed`` drives initialisation and data order.
``runlocal``: 10 steps (the LR milestone and the intervals scaled down).

Pseudo depth (``mode=export_depth``) is exported over the annotated images
(stream ``config.data.seg``: ``leftImg8bit/``, frame offset 0, 1024x512,
no crop/flip/augmentation, train and val). By default it is the
reference's v1 format, min-max normalised u8, which the SSL
configs read (``pseudo_depth=``) and SSDA with ``depth_scale=reference``.
``export=paper|reference`` switches to ``mode=export_depth`` in the format
of that SSDA depth scale (``configs/ssda_gta.py:PSEUDO_DEPTH``; ``paper``:
raw sigmoid disparity, u16). Use the training run's own arguments (stage,
fd) so that the model matches its checkpoint::

  python -m sdeseg_jax.main --workdir=/data/sde_cityscapes \
      --config=configs/sde_cityscapes.py:stage=2,export=paper,\
path=/data/cityscapes --config.export.out_dir=/data/pseudo_depth/cityscapes
"""

from configs import common
from configs import ssda_gta

VARIANTS = ("stage=0", "stage=1", "stage=2", "stage=2,fd=0", "runlocal",
            "export=paper", "export=reference")


def parse_export(arg: str | None) -> None:
  """Fails clearly on a bare ``export`` (it needs the SSDA depth scale)."""
  for part in (arg or "").split(","):
    if part == "export":
      raise ValueError(
          "config argument 'export' needs a value: export=paper or "
          "export=reference (the config.ssda.depth_scale of the SSDA run "
          "that reads the pseudo depth)")


def export_for_ssda(config, stream: str, domain: str, export: str,
                    default: str) -> None:
  """Sets ``config.export`` to the pseudo-depth format SSDA reads.

  Args:
    config: an SDE config with ``export`` and ``data`` sections.
    stream: key of the ``config.data`` stream to export.
    domain: ``target`` (Cityscapes) or ``source`` (GTA5 / Synthia).
    export: the ``export=`` argument: an SSDA depth scale (then ``config.
      mode`` becomes ``export_depth``), or "" (training config).
    default: depth scale whose format applies when ``export`` is "".
  """
  if export and export not in ssda_gta.PSEUDO_DEPTH:
    raise ValueError(
        f"export={export!r}; choose the SSDA depth scale the pseudo depth "
        f"is for: {sorted(ssda_gta.PSEUDO_DEPTH)}")
  encoding, normalize = ssda_gta.pseudo_depth_format(export or default,
                                                     domain)
  config.export.stream = stream
  config.export.encoding = encoding
  config.export.normalize = normalize
  config.export.splits = ("train", "val")
  if export:
    config.mode = "export_depth"


def sde_sections(config, *, train_stream, val_stream, frame_offsets):
  """Adds the sections every SDE config shares (data, loss, init, eval)."""
  config.data = common.data_config(train=train_stream, val=val_stream)
  config.loss = common.sde_loss_config(frame_offsets=frame_offsets)
  # Weights from an earlier run (stage chaining): its workdir, the step
  # (-1 = latest) and regexes over '/'-joined variable paths to copy.
  config.init = common.mlc.ConfigDict()
  config.init.checkpoint = ""
  config.init.step = -1
  config.init.patterns = ()
  config.eval = common.mlc.ConfigDict()
  config.eval.split = "val"      # "" = no periodic evaluation
  config.eval.batch_size = 4
  config.eval.num_batches = 0    # 0 = the whole split
  config.eval.num_images = 4     # TensorBoard depth panels
  # mode=export_depth (sdeseg_jax/train/export.py).
  config.export = common.mlc.ConfigDict()
  config.export.checkpoint = ""  # a workdir; "" = this run's workdir
  config.export.step = -1        # -1 = latest checkpoint
  config.export.stream = "val"   # which config.data stream to export
  config.export.splits = ("train", "val")
  config.export.encoding = "u16"  # u16: round(d*65535) | u8: trunc(d*255)
  config.export.normalize = True  # per-image min-max (reference v1)
  config.export.out_dir = ""     # "" = <workdir>/pseudo_depth
  config.export.batch_size = 4
  return config


def scaled_milestone(milestone: int, steps: int, full_steps: int) -> int:
  """The reference's absolute LR milestone, scaled to a shorter run.

  ``milestone`` at the full ``full_steps``; a runlocal run of ``steps``
  drops the LR at the same fraction of its length (or never, where the
  reference's milestone lies past the end, as in Cityscapes stage 2).
  """
  return max(1, milestone * steps // full_steps)


def get_config(arg=None):
  parse_export(arg)
  a = common.parse_arg(arg, stage=2, fd=True, runlocal=False, path="",
                       init="", imnet="", pose_imnet="", master_k=True,
                       dtype="float32", export="", seed=0)
  if a.stage not in (0, 1, 2):
    raise ValueError(f"stage={a.stage}; choose 0, 1 or 2")
  config = common.mlc.ConfigDict()
  config.mode = "sde"
  config.seed = a.seed
  crop = () if a.stage == 0 else (512, 512)
  offsets = (-1, 0, 1)
  intr = "master_compat" if a.master_k else "ssda"
  train_stream = common.stream_config(
      "cityscapes_sde", "cityscapes", path=a.path, frame_offsets=offsets,
      all_frames=True, image_size=(512, 1024), crop_size=crop,
      color_aug=True, intrinsics_mode=intr)
  val_stream = common.stream_config(
      "cityscapes_sde_val", "cityscapes", path=a.path,
      frame_offsets=offsets, image_size=(512, 1024), crop_size=(),
      intrinsics_mode=intr, with_depth=True)
  sde_sections(config, train_stream=train_stream, val_stream=val_stream,
               frame_offsets=offsets)
  # The annotated images (what SSL and SSDA read pseudo depth for).
  config.data.seg = ssda_gta.cityscapes_stream(path=a.path, crop_size=(),
                                               flip_prob=0.0)
  export_for_ssda(config, "seg", "target", a.export, default="reference")
  fd = a.stage == 2 and a.fd
  config.model = common.model_config(
      "sde", imnet_encoder=fd, encoder_init=a.imnet,
      pose_encoder_init=a.pose_imnet if a.stage == 0 else "",
      dtype=a.dtype)
  config.loss.feature_distance_weight = 1e-2 if fd else 0.0
  iters = {0: 300_000, 1: 300_000, 2: 100_000}[a.stage]
  full_steps = iters - 1
  steps = 10 if a.runlocal else full_steps
  config.train = common.train_config(
      num_steps=steps, batch_size=2 if a.stage == 0 and not a.runlocal
      else 4, seed=common.same_as(config.get_ref("seed")))
  common.set_intervals(config.train, log=(100, 10), eval_=(5000, 2),
                       checkpoint=(5000, 2))
  groups = (("imnet_encoder/.*", "frozen"),) if fd else ()
  if a.stage in (0, 1):
    groups = (("encoder/.*", "frozen"),)
  config.optim = common.optim_config(
      name="adam", lr=1e-5 if a.stage == 2 else 1e-4, groups=groups,
      schedule="multistep", milestones=(scaled_milestone(160_000, steps,
                                                         full_steps),),
      gamma=0.1)
  config.init.checkpoint = a.init
  config.init.patterns = {0: (), 1: ("pose/.*",),
                          2: ("depth/.*", "pose/.*")}[a.stage]
  if a.runlocal:
    config.eval.num_batches = 2
  return config
