r"""Semi-supervised segmentation on Cityscapes (master exps 210-212, IJCV
Tables 3, 5, 7, 9).

  python -m sdeseg_jax.main --workdir=/runs/ssl_dx_mtl_372_s42 \
      --config=configs/ssl_cityscapes.py:row=mtl_depthmix,labels=372,\
seed=42,path=/data/cityscapes,imnet=/w/r101.npz,sde=/runs/sde_stage2

Rows (``row=``; see docs/reproduce.md for the table each one belongs to):

* ``baseline``: CE on the labeled subset only, ImageNet encoder, randomly
  initialised transfer head (210 ``scratch``).
* ``pseudo``: + mean-teacher pseudo labels, mask = 1 (``scratch_ema``).
* ``classmix``: + ClassMix of unlabeled images (``scratch_classmix``);
  ``classmix_video`` draws the unlabeled images from every sequence frame.
* ``cutmix``: + CutMix (not in the paper tables; the reference has no path).
* ``depthmix``: + DepthMix with the exported SDE pseudo depth and GT mixing
  (``scratch_depthmixgt``); needs ``pseudo_depth=`` (mode export_depth).
* ``transfer``: encoder and transfer-head decoder from an SDE run without
  the ImageNet feature distance (``sde=`` an fd0 run), CE only.
* ``transfer_fd``: the same from an SDE run with feature distance (fd2).
* ``mtl``: transfer (fd2) + PAD multi-task with the SDE loss on the labeled
  sequences; both PAD decoders and the pose net from the SDE run.
* ``transfer_depthmix``: transfer (fd2) + DepthMix (210
  ``transfer_dcompgt0.030``).
* ``mtl_depthmix``: PAD multi-task + DepthMix on the student's online
  disparity, SDE loss on the labeled and the unlabeled batch, pose net also
  run in the mixed forward (``config.ssl.mixed_pose``, as the reference does)
  (212).

Modifiers: ``labels`` (100 | 372 | 744 | 2975; random subset with
``np.random.seed(seed)`` as in the reference), ``seed`` (7 | 25 | 42:
training and subset seed), ``select=<dir or json>`` (S: the labeled subset
written by
``mode=select``, ``configs/select_cityscapes.py``: its workdir, whose
``nlabels{labels}_subset.json`` is read, or one such list, whose first
``labels`` entries are used), ``teacher=eval`` (teacher in inference mode with averaged
BatchNorm statistics; by default it runs in train mode and keeps its own
running statistics, as the reference), ``q_per_image`` (paper Eq. 11),
``aug=standard``, ``paper_dlr`` (depth decoder at 1e-3 as the paper
states; the code trains it at 1e-2), ``ref_steps`` (39,999 steps like the reference loop),
``sde_twice=0`` (SDE loss on the labeled batch only; the reference also
applies it to the unlabeled batch in 212), ``full_eval`` (also evaluate at
2048x1024 labels), ``runlocal`` (a few tiny steps).
"""

from configs import common
from sdeseg_jax import constants
from sdeseg_jax.data import labels

ROWS = ("baseline", "pseudo", "classmix", "classmix_video", "cutmix",
        "depthmix", "transfer", "transfer_fd", "mtl", "transfer_depthmix",
        "mtl_depthmix")
LABELS = (100, 372, 744, 2975)
SEEDS = (7, 25, 42)
# Table 3 (mixing), Table 5 (transfer / multi-task), Table 7 (combinations
# with data selection S), Table 9 (SOTA comparison) -- each x labels x seeds.
_TABLE_ROWS = ("baseline", "pseudo", "classmix", "depthmix", "transfer",
               "transfer_fd", "mtl", "transfer_depthmix", "mtl_depthmix",
               "classmix_video")
VARIANTS = tuple(
    f"row={r},labels={n},seed={s}"
    for r in _TABLE_ROWS for n in LABELS for s in SEEDS) + tuple(
        f"row={r},labels={n},seed={s},select=/runs/select_ds_us_s{s}"
        for r in ("baseline", "depthmix", "mtl", "mtl_depthmix")
        for n in (100, 372, 744) for s in SEEDS) + (
            "row=cutmix", "row=mtl_depthmix,teacher=eval",
            "row=mtl_depthmix,q_per_image", "row=mtl_depthmix,paper_dlr",
            "row=mtl_depthmix,sde_twice=0,ref_steps",
            "row=depthmix,aug=standard", "row=mtl_depthmix,full_eval",
            "runlocal")

# What each row switches on: ``model`` (model_config variant), ``init``
# ("sde": encoder and decoders from an SDE run), ``mask`` ("" = no
# unlabeled branch; none | classmix | cutmix | depthmix), ``use_gt`` (mix
# with the labeled ground truth), ``depth`` (DepthMix depth: pseudo |
# online) and ``video`` (unlabeled images from every sequence frame).
def _row(model, init="", mask="", use_gt=False, depth="", video=False):
  return dict(model=model, init=init, mask=mask, use_gt=use_gt, depth=depth,
              video=video)


_ROW_SPEC = {
    "baseline": _row("transfer"),
    "pseudo": _row("transfer", mask="none"),
    "classmix": _row("transfer", mask="classmix"),
    "classmix_video": _row("transfer", mask="classmix", video=True),
    "cutmix": _row("transfer", mask="cutmix"),
    "depthmix": _row("transfer", mask="depthmix", use_gt=True,
                     depth="pseudo"),
    "transfer": _row("transfer", init="sde"),
    "transfer_fd": _row("transfer", init="sde"),
    "mtl": _row("ssl", init="sde"),
    "transfer_depthmix": _row("transfer", init="sde", mask="depthmix",
                              use_gt=True, depth="pseudo"),
    "mtl_depthmix": _row("ssl", init="sde", mask="depthmix", use_gt=True,
                         depth="online"),
}
assert tuple(_ROW_SPEC) == ROWS


def row_spec(row: str) -> dict:
  """The components of a row (``_ROW_SPEC``), or a clear error."""
  if row not in _ROW_SPEC:
    raise ValueError(f"row={row!r}; choose one of {ROWS}")
  return dict(_ROW_SPEC[row])


def ssl_sections(config, *, a, labeled, unlabeled, val, val_full,
                 num_steps: int, step_size: int, class_names):
  """Fills the sections every SSL config shares, from the parsed args ``a``.

  Args:
    config: the ConfigDict being built (``model`` already set).
    a: parsed args with ``row``, ``sde``, ``teacher``, ``q_per_image``,
      ``aug``, ``paper_dlr``, ``ref_steps``, ``sde_twice``, ``full_eval``.
    labeled, unlabeled, val, val_full: stream configs.
    num_steps: train iterations (the reference runs ``num_steps - 1``).
    step_size: LR x0.1 after this many updates (at ``num_steps``; a
      shorter run scales it).
    class_names: names of the ``config.model.num_classes`` classes.
  """
  r = row_spec(a.row)
  mask, depth_source = r["mask"], r["depth"]
  mtl = r["model"] == "ssl"
  unl = bool(mask)
  config.data = common.data_config(labeled=labeled, unlabeled=unlabeled,
                                   val=val, val_full=val_full)
  config.loss = common.sde_loss_config(
      frame_offsets=(-1, 0, 1) if mtl else (0,))
  config.ssl = common.mlc.ConfigDict()
  config.ssl.unlabeled = unl           # mean teacher + mixed batch
  config.ssl.unlabeled_batch_size = 2  # the reference's 2 mixed images
  config.ssl.seg_weight = 1.0          # segmentation_lambda
  config.ssl.sde_weight = 1.0 if mtl else 0.0  # monodepth_lambda
  # The reference applies L_D to the unlabeled batch as well in 212.
  config.ssl.sde_on_unlabeled = mtl and unl and bool(a.sde_twice)
  # 212 also runs the pose net in the mixed forward (mixed centre, original
  # neighbours): unused outputs, updated pose BatchNorm statistics.
  config.ssl.mixed_pose = mtl and unl
  config.mix = common.mlc.ConfigDict(dict(
      mask=mask or "none", depth_source=depth_source or "pseudo",
      margin=0.03, foreground_threshold=0.0, use_gt=r["use_gt"],
      tau=constants.PSEUDO_LABEL_TAU,
      per_image_q=bool(a.q_per_image), weight=1.0,
      teacher_mode=a.teacher, augment=a.aug, jitter_prob=0.8, blur_prob=0.5,
      cutmix_area=0.5))
  config.init = common.mlc.ConfigDict()
  config.init.checkpoint = a.sde if r["init"] else ""
  config.init.step = -1
  config.init.parts = ("encoder", "decoders", "pose") if r["init"] else ()
  config.train = common.train_config(
      num_steps=num_steps - 1 if a.ref_steps else num_steps, batch_size=2,
      seed=common.same_as(config.get_ref("seed")), use_ema=unl,
      ema_decay=0.99,
      teacher_batch_stats="ema" if a.teacher == "eval" else "own")
  # Everything that depends on the run length follows num_steps (a later
  # runlocal block or --config.train.num_steps=N).
  common.set_intervals(config.train, log=(50, 4), eval_=(2500, 2),
                       checkpoint=(2500, 2))
  # Depth decoder (PAD depth_dec + SA_seg, or a transfer-mode depth
  # decoder) at the paper's 1e-3 instead of the code's 1e-2.
  dlr = ((("pad/depth_dec/.*", 1e-3), ("pad/sa_seg/.*", 1e-3))
         if a.paper_dlr and mtl else ())
  config.optim = common.optim_config(
      name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4, clip_norm=10.0,
      groups=(("encoder/.*", 1e-3),) + ((("pose/.*", 1e-6),) if mtl
                                        else ()) + dlr,
      schedule="step",
      # The reference's step at its full length (30k of 40k), scaled up to
      # a whole step when the run is shorter or ref_steps drops the last.
      step_size=common.derived(
          config.train.get_ref("num_steps"),
          lambda v: max(1, -(-step_size * v // num_steps))), gamma=0.1)
  config.eval = common.mlc.ConfigDict()
  config.eval.split = "val"
  config.eval.batch_size = 2
  config.eval.num_batches = 0      # 0 = the whole split
  config.eval.num_images = 2       # TensorBoard panels
  config.eval.protocols = ("paper", "full") if a.full_eval else ("paper",)
  config.eval.class_names = tuple(class_names)
  return config


def parse(arg):
  return common.parse_arg(
      arg, row="mtl_depthmix", labels=372, seed=42, select="", path="",
      imnet="", pose_imnet="", sde="", pseudo_depth="", teacher="train",
      q_per_image=False, aug="kornia04", paper_dlr=False, ref_steps=False,
      sde_twice=True, full_eval=False, runlocal=False)


def selection_file(select: str, labels: int) -> str:
  """The list ``select=`` names: a ``.json`` file itself, or the
  ``nlabels{labels}_subset.json`` of a ``mode=select`` workdir. Lists are
  prefix-consistent, so a longer list's first ``labels`` entries also do
  (the ``fixed`` subset takes its first ``subset.n``)."""
  if select.endswith(".json"):
    return select
  return select.rstrip("/") + f"/nlabels{labels}_subset.json"


def subset(a, n_total: int = 2975):
  """The labeled ``subset`` section of the args.

  ``labels >= n_total`` (the dataset's training-set size) means every image
  is labeled.
  """
  s = common.mlc.ConfigDict()
  if a.select:
    s.mode, s.n, s.seed = "fixed", a.labels, a.seed
    s.file = selection_file(a.select, a.labels)
  elif a.labels >= n_total:
    s.mode, s.n, s.seed, s.file = "all", 0, a.seed, ""
  else:
    s.mode, s.n, s.seed, s.file = "random", a.labels, a.seed, ""
  return s


def get_config(arg=None):
  a = parse(arg)
  r = row_spec(a.row)
  model, use_gt, depth_source = r["model"], r["use_gt"], r["depth"]
  mtl = model == "ssl"
  if a.teacher not in ("train", "eval"):
    raise ValueError(f"teacher={a.teacher!r}; choose train or eval")
  config = common.mlc.ConfigDict()
  config.mode = "ssl"
  config.seed = a.seed
  seq = (-1, 0, 1) if mtl else (0,)
  sub = subset(a)
  sub.seed = common.same_as(config.get_ref("seed"))  # the one seed
  labeled = common.stream_config(
      "cityscapes_ssl", "cityscapes", path=a.path, frame_offsets=seq,
      image_size=(512, 1024), crop_size=(512, 512), flip_prob=0.5,
      intrinsics_mode="ssda")
  labeled.subset = sub
  unlabeled = common.stream_config(
      "cityscapes_ssl", "cityscapes", path=a.path, frame_offsets=seq,
      all_frames=r["video"], image_size=(512, 1024), crop_size=(512, 512),
      flip_prob=0.5, intrinsics_mode="ssda",
      pseudo_depth_dir=a.pseudo_depth if depth_source == "pseudo" else "",
      load_labeled=use_gt or a.labels >= 2975, load_unlabeled=True)
  unlabeled.subset = sub
  val = common.stream_config(
      "cityscapes_val", "cityscapes", path=a.path, image_size=(512, 1024),
      crop_size=(), flip_prob=0.0)
  val_full = common.stream_config(
      "cityscapes_val_full", "cityscapes", path=a.path,
      image_size=(1024, 2048), crop_size=(), flip_prob=0.0,
      image_folder="full")
  config.model = common.model_config(
      model, encoder_init=a.imnet,
      pose_encoder_init=a.pose_imnet if mtl else "", pose=mtl,
      depth=mtl)
  ssl_sections(config, a=a, labeled=labeled, unlabeled=unlabeled, val=val,
               val_full=val_full, num_steps=40_000, step_size=30_000,
               class_names=labels.CLASS_NAMES)
  if a.runlocal:
    config.train.num_steps = 4
    config.eval.num_batches = 2
  return config
