r"""Semi-supervised segmentation on MiniCity, sized for a CPU.

  python -m sdeseg_jax.main --config=configs/ssl_minicity.py:row=depthmix \
      --workdir=/tmp/ssl_minicity

The rows of ``configs/ssl_cityscapes.py`` (``row=``) on a generated MiniCity
(cityscapes layout, 256x128, generated into ``<workdir>/data/minicity`` if
missing) with 128x128 crops, a narrow ResNet-18 (``width``), the tiny U-Net
decoder, a ResNet-10 pose net, ``labels`` labeled images (random subset,
``seed``) out of ``sequences`` training sequences, 2 labeled + 2 mixed
images per step and a short schedule (x0.1 after 75% of ``steps``).

MiniCity has no exported SDE pseudo depth unless ``mode=export_depth`` was
run, so rows that use pseudo depth (``depthmix``, ``transfer_depthmix``)
fall back to the rendered ground-truth depth unless ``pseudo_depth=<dir>``
is given; ``mtl_depthmix`` uses the student's online disparity as on
Cityscapes. Rows with SDE transfer need ``sde=<an sde_minicity workdir>``
with the same ``width``. ``select=<dir or json>``: the ``labels`` images chosen by
``configs/select_minicity.py`` (its workdir or a list).
``runlocal``: 32x64 images, a handful of steps.
"""

from configs import common
from configs import ssl_cityscapes
from sdeseg_jax.data import labels

VARIANTS = tuple(f"row={r}" for r in ssl_cityscapes.ROWS) + (
    "row=depthmix,teacher=eval", "row=classmix,q_per_image", "runlocal",
    "row=mtl_depthmix,runlocal")


def get_config(arg=None):
  a = common.parse_arg(
      arg, row="depthmix", labels=8, seed=0, select="", path="", imnet="",
      pose_imnet="", sde="", pseudo_depth="", teacher="train",
      q_per_image=False, aug="kornia04", paper_dlr=False, ref_steps=False,
      sde_twice=True, full_eval=False, runlocal=False, width=16, steps=400,
      sequences=48, crop=128, height=128, image_width=256)
  r = ssl_cityscapes.row_spec(a.row)
  model, use_gt, depth_source = r["model"], r["use_gt"], r["depth"]
  mtl = model == "ssl"
  config = common.mlc.ConfigDict()
  config.mode = "ssl"
  config.seed = a.seed
  h, w, crop = a.height, a.image_width, (a.crop, a.crop)
  n_train, n_val = a.sequences, 8
  if a.runlocal:
    h, w, crop, n_train, n_val = 32, 64, (32, 32), 8, 2
  config.minicity = common.minicity_config(
      layout="cityscapes", seed=0, width=w, height=h,
      num_train_sequences=n_train, num_val_sequences=n_val)
  seq = (-1, 0, 1) if mtl else (0,)
  sub = common.mlc.ConfigDict(dict(
      mode="fixed" if a.select else "random",
      n=a.labels if a.select else min(a.labels, n_train // 2),
      seed=common.same_as(config.get_ref("seed")),
      file=(ssl_cityscapes.selection_file(a.select, a.labels)
            if a.select else "")))
  if depth_source == "pseudo" and not a.pseudo_depth:
    depth_source = "gt"
  stream = dict(path=a.path, frame_offsets=seq, image_size=(h, w),
                crop_size=crop, flip_prob=0.5, intrinsics_mode="exact",
                full_res=(w, h), num_workers=0)
  labeled = common.stream_config("minicity_ssl", "cityscapes", **stream)
  labeled.subset = sub
  unlabeled = common.stream_config(
      "minicity_ssl", "cityscapes", **dict(stream, all_frames=r["video"]),
      with_depth=depth_source == "gt",
      pseudo_depth_dir=a.pseudo_depth if depth_source == "pseudo" else "",
      load_labeled=use_gt, load_unlabeled=True)
  unlabeled.subset = sub
  val = common.stream_config(
      "minicity_ssl_val", "cityscapes", path=a.path, image_size=(h, w),
      crop_size=(), flip_prob=0.0, full_res=(w, h), num_workers=0)
  # MiniCity renders at one size: the "full" protocol evaluates the same
  # labels with the image resized to val.image_size (a no-op here).
  val_full = common.stream_config(
      "minicity_ssl_val", "cityscapes", path=a.path, image_size=(h, w),
      crop_size=(), flip_prob=0.0, full_res=(w, h), num_workers=0)
  config.model = common.model_config(
      model, encoder_depth=18, width=a.width, decoder="dec_tiny",
      pose_depth=10, encoder_init=a.imnet,
      pose_encoder_init=a.pose_imnet if mtl else "", pose=mtl, depth=mtl)
  ssl_cityscapes.ssl_sections(
      config, a=a, labeled=labeled, unlabeled=unlabeled, val=val,
      val_full=val_full, num_steps=a.steps,
      step_size=max(1, int(0.75 * a.steps)),
      class_names=labels.CLASS_NAMES)
  config.mix.depth_source = depth_source or "pseudo"
  # Short runs: log about 20 times, evaluate and checkpoint at the end (all
  # following num_steps; the LR step at 75% does through ssl_sections).
  n = config.train.get_ref("num_steps")
  config.train.log_every = common.every(n, 20, 20)
  config.train.eval_every = common.same_as(n)
  config.train.image_every = common.same_as(n)
  config.train.checkpoint_every = common.same_as(n)
  config.eval.batch_size = 4
  if a.runlocal:
    config.model.update(encoder_depth=10, width=8)
    config.train.num_steps = 4
    # Evaluate and checkpoint mid-run too (what the smoke tests exercise).
    config.train.update(eval_every=2, checkpoint_every=2)
    config.eval.num_batches = 1
  return config
