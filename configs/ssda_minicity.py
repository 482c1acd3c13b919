r"""SSDA on MiniCity (gta5-layout source -> cityscapes-layout target), CPU size.

  python -m sdeseg_jax.main --config=configs/ssda_minicity.py:row=cdm_tdm \
      --config.data_root=/tmp/demo --workdir=/tmp/ssda_minicity

``data_root`` is a demo workdir (``configs/demo.py``): ``data/
minicity_cityscapes``, ``data/minicity_gta5``, ``pseudo_depth/target``,
``pseudo_depth/source`` and, for the multi-task row, ``sde_target`` (the
target SDE run). The network is the demo's narrow ResNet with the tiny
U-Net decoder (``model_config("tiny")`` widths), so the SDE weights fit.

Arguments: ``row`` (``configs/ssda_gta.py:ROWS``), ``n`` labeled target
images, ``steps``, ``height``/``width`` of the images, ``crop`` (square
training crop), ``depth_scale``, ``seed`` (initialisation and data order;
the labeled subset keeps seed 42 as the reference), ``runlocal`` (3 steps
at 32x64, for tests; the LR step and the intervals follow the step count).
"""

from configs import common
from configs import ssda_gta

VARIANTS = tuple(f"row={r}" for r in ssda_gta.ROWS) + (
    "runlocal", "row=cdm_tdm_mgs,depth_scale=reference")

# Layout of a demo workdir (sdeseg_jax/demo.py).
FOLDERS = dict(target="data/minicity_cityscapes",
               unlabeled="data/minicity_cityscapes",
               val="data/minicity_cityscapes", source="data/minicity_gta5",
               source_depth="pseudo_depth/source",
               unlabeled_depth="pseudo_depth/target", sde="sde_target")


def model(row: str, encoder_depth: int = 10, width: int = 16):
  """The MiniCity segmentation net of a row (matches the demo's SDE)."""
  mtl = ssda_gta.ROWS[row]["mtl"]
  if mtl:
    return common.model_config("tiny", encoder_depth=encoder_depth,
                               width=width)
  return common.model_config("tiny", encoder_depth=encoder_depth,
                             width=width, seg_head="transfer", depth=False,
                             pose=False)


def get_config(arg=None):
  a = common.parse_arg(arg, row="full", n=8, steps=400, height=64,
                       width=128, crop=64, depth_scale="paper", seed=0,
                       lr=1e-2, runlocal=False, val_count=6)
  if a.runlocal:
    a.height, a.width, a.crop = 32, 64, 32
  r = ssda_gta.ROWS.get(a.row)
  if r is None:
    raise ValueError(f"unknown row {a.row!r}; choose one of "
                     f"{sorted(ssda_gta.ROWS)}")
  mtl = r["mtl"]
  paper = a.depth_scale == "paper"
  size, crop = (a.height, a.width), (a.crop, a.crop)
  full_res = (a.width, a.height)

  def cs(name, **kw):
    s = common.stream_config(name, "cityscapes", image_size=size,
                             crop_size=crop, full_res=full_res,
                             num_workers=0, **kw)
    s.subset.update(dict(mode="random", n=a.n, seed=42))
    return s

  # Stream names equal the demo's so the prepared tfds data is shared.
  target = cs("minicity_cityscapes", frame_offsets=(-1, 0, 1))
  if not mtl:
    target.num_scales = 1
  unlabeled = cs("minicity_cityscapes", frame_offsets=(-1, 0, 1),
                 load_unlabeled=True, num_scales=1,
                 pseudo_depth_encoding="u16" if paper else "u8")
  val = common.stream_config("minicity_cityscapes", "cityscapes",
                             frame_offsets=(-1, 0, 1), image_size=size,
                             crop_size=(), full_res=full_res, num_workers=0,
                             num_scales=1)
  source = common.stream_config(
      "minicity_gta5", "gta5", image_size=size, crop_size=crop,
      full_res=full_res, val_count=a.val_count, num_workers=0, num_scales=1,
      pseudo_depth_encoding="u16")
  steps = 3 if a.runlocal else a.steps
  train = common.train_config(
      num_steps=steps, batch_size=None, image_every=0,
      use_ema=r["cdm"] != "none" or r["tdm"], ema_decay=0.99)
  n = train.get_ref("num_steps")
  train.log_every = common.every(n, 25, 3)
  train.eval_every = common.same_as(n)  # at the end
  train.checkpoint_every = common.every(n, 100, 2)
  optim = common.optim_config(
      name="sgd", lr=a.lr, groups=(("encoder/.*", a.lr / 10),) + (
          (("pose/.*", 1e-6),) if mtl else ()),
      momentum=0.9, weight_decay=5e-4, schedule="step",
      step_size=common.derived(n, lambda v: max(1, int(v * 0.75))),
      gamma=0.1, clip_norm=10.0)
  return ssda_gta.ssda_config(
      row=a.row, target=target, source=source, unlabeled=unlabeled,
      val=val, folders=FOLDERS, model=model(a.row), train=train,
      optim=optim, eval_batch_size=4, init_checkpoint="auto" if mtl else "",
      depth_scale=a.depth_scale, seed=a.seed)
