r"""SDE on MiniCity, sized for a CPU (the engine's end-to-end check).

  python -m sdeseg_jax.main --config=configs/sde_minicity.py \
      --workdir=/tmp/sde_minicity

MiniCity (cityscapes layout) is generated into ``<workdir>/data/`` if it is
missing, then prepared as tfds. ``frames`` frames are rendered per sequence
(default 10: frames 15..24) and training uses every sequence frame that has
both neighbours (``all_frames``; 48 sequences x 8 = 384 samples instead of
48 annotated frames with the old 3-frame default). The model is a narrow
ResNet-18 (``width`` channels in the stem) with the tiny U-Net decoder and a
ResNet-10 pose net; frames (-gap, 0, gap) at the full rendered size, flip +
SDE colour augmentation, Adam ``lr`` (x0.1 after 75% of the steps, which
follows ``--config.train.num_steps`` as the log, eval and checkpoint
intervals do;
``pose_lr`` > 0 gives the pose net its own rate), true MiniCity intrinsics
with the renderer's pixel-centre convention (``intrinsics_mode="exact"``).
Depth is evaluated against MiniCity's rendered depth on the annotated val
frames (median-scaled abs_rel, delta), the pose net against the sidecar's
camera poses (``with_pose``: snippet ATE, translation-direction and
rotation errors in degrees). ``gt_pose``: the diagnostic oracle that warps
with the ground-truth poses instead of the pose net's (what depth alone
reaches). ``pose_prior`` (default 0.01, 0 = off, the reference): the pose
net starts at a forward translation of that size
(``config.model.pose_translation_prior``); without it the randomly
initialised pose net settles on a wrong direction of travel (the reference
starts its pose encoder from ImageNet, which this machine does not have).
``seed`` drives initialisation and data order (the MiniCity world itself
is fixed, seed 0). ``runlocal``: 6 steps of a smaller world, for smoke
tests.
"""

from configs import common
from configs import sde_cityscapes

VARIANTS = ("runlocal", "runlocal,gt_pose=True", "runlocal,pose_prior=0")


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, width=16, height=64,
                       image_width=128, steps=3000, batch_size=4, lr=3e-4,
                       sequences=48, frames=10, all_frames=True, gap=1,
                       pose_lr=0.0, seed=0, gt_pose=False,
                       pose_prior=0.01)
  config = common.mlc.ConfigDict()
  config.mode = "sde"
  config.seed = a.seed
  h, w = a.height, a.image_width
  n_train, n_val = (4, 2) if a.runlocal else (a.sequences, 8)
  if a.runlocal:
    h, w = 32, 64
  config.minicity = common.minicity_config(
      layout="cityscapes", seed=0, width=w, height=h,
      num_train_sequences=n_train, num_val_sequences=n_val,
      frames_per_sequence=a.frames)
  offsets = (-a.gap, 0, a.gap)
  train_stream = common.stream_config(
      "minicity_sde", "cityscapes", frame_offsets=offsets,
      image_size=(h, w), crop_size=(), color_aug=True,
      all_frames=a.all_frames, intrinsics_mode="exact", full_res=(w, h),
      num_workers=0, with_pose=a.gt_pose)
  val_stream = common.stream_config(
      "minicity_sde_val", "cityscapes", frame_offsets=offsets,
      image_size=(h, w), crop_size=(), with_depth=True, full_res=(w, h),
      intrinsics_mode="exact", num_workers=0, with_pose=True)
  sde_cityscapes.sde_sections(config, train_stream=train_stream,
                              val_stream=val_stream, frame_offsets=offsets)
  config.loss.gt_pose = a.gt_pose
  config.model = common.model_config(
      "sde", encoder_depth=18, width=a.width, decoder="dec_tiny",
      pose_depth=10,
      pose_translation_prior=((0.0, 0.0, -a.pose_prior) if a.pose_prior
                              else ()))
  steps = 6 if a.runlocal else a.steps
  config.train = common.train_config(
      num_steps=steps, batch_size=a.batch_size,
      seed=common.same_as(config.get_ref("seed")))
  # Derived through references, so that --config.train.num_steps=N (or
  # --config.train.eval_every) carries over to everything that follows it.
  n = config.train.get_ref("num_steps")
  config.train.log_every = common.every(n, 50, 3)
  config.train.eval_every = common.every(n, 500, 1)
  config.train.checkpoint_every = common.every(n, 500, 2)
  config.train.image_every = common.same_as(
      config.train.get_ref("eval_every"))
  # x0.1 once, after 75% of the steps (a step schedule whose second drop
  # would fall after the end).
  config.optim = common.optim_config(
      name="adam", lr=a.lr, schedule="step",
      step_size=common.derived(n, lambda v: max(1, int(v * 0.75))),
      gamma=0.1,
      groups=((("pose/.*", a.pose_lr),) if a.pose_lr > 0 else ()))
  config.eval.batch_size = 4
  if a.runlocal:
    config.eval.num_batches = 1
  return config
