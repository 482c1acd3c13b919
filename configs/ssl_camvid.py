r"""Semi-supervised segmentation on CamVid (IJCV Table 10).

  python -m sdeseg_jax.main --workdir=/runs/camvid_ours_100_s42 \
      --config=configs/ssl_camvid.py:row=transfer_depthmix,labels=100,\
seed=42,path=/data/CamVid,imnet=/w/r101.npz,sde=/runs/sde_stage2,\
pseudo_depth=/runs/sde_stage2/pseudo_depth_camvid

SDE is trained on Cityscapes sequences (``sde=`` a ``sde_cityscapes``
stage-2 run; its exported pseudo depth on CamVid for DepthMix). CamVid has
no sequences, so there is no multi-task row. Rows of Table 10: ``baseline``,
``classmix``, ``transfer_depthmix`` (Ours w/o S) and ``transfer_depthmix``
with ``select=<json>`` (Ours). Settings of the reference's ``camvid``
defaults: 480x360 upsampled to 672x512, 512x512 crops, 20k
iterations, LR x0.1 after 15k, evaluation on ``test``. The head has 12
outputs (the reference's [BUG]; class 11 never occurs in the labels);
``classes11`` gives the 11-class head.
"""

from configs import common
from configs import ssl_cityscapes
from sdeseg_jax.data import labels

ROWS = ("baseline", "classmix", "transfer_depthmix")
LABELS = (50, 100, 367)
SEEDS = (7, 25, 42)
VARIANTS = tuple(
    f"row={r},labels={n},seed={s}"
    for r in ROWS for n in LABELS for s in SEEDS) + tuple(
        f"row=transfer_depthmix,labels={n},seed={s},"
        f"select=selection/camvid_{n}_s{s}.json"
        for n in (50, 100) for s in SEEDS) + ("classes11", "runlocal")


def get_config(arg=None):
  a = common.parse_arg(
      arg, row="transfer_depthmix", labels=100, seed=42, select="", path="",
      imnet="", pose_imnet="", sde="", pseudo_depth="", teacher="train",
      q_per_image=False, aug="kornia04", paper_dlr=False, ref_steps=False,
      sde_twice=True, full_eval=False, classes11=False, runlocal=False)
  r = ssl_cityscapes.row_spec(a.row)
  use_gt, depth_source = r["use_gt"], r["depth"]
  if r["model"] != "transfer":
    raise ValueError(f"row={a.row!r} needs sequences; CamVid rows: "
                     f"{ROWS}")
  config = common.mlc.ConfigDict()
  config.mode = "ssl"
  config.seed = a.seed
  sub = ssl_cityscapes.subset(a, n_total=367)  # CamVid train: 367 images
  sub.seed = common.same_as(config.get_ref("seed"))  # the one seed
  stream = dict(path=a.path, frame_offsets=(0,), image_size=(512, 672),
                crop_size=(512, 512), flip_prob=0.5)
  labeled = common.stream_config("camvid_ssl", "camvid", **stream)
  labeled.subset = sub
  unlabeled = common.stream_config(
      "camvid_ssl", "camvid", **stream,
      pseudo_depth_dir=a.pseudo_depth if depth_source == "pseudo" else "",
      load_labeled=use_gt or a.labels >= 367, load_unlabeled=True)
  unlabeled.subset = sub
  val = common.stream_config("camvid_test", "camvid", path=a.path,
                             image_size=(512, 672), crop_size=(),
                             flip_prob=0.0)
  n_cls = 11 if a.classes11 else labels.CAMVID_REFERENCE_NUM_CLASSES
  config.model = common.model_config(
      "transfer", encoder_init=a.imnet, pose=False, depth=False,
      num_classes=n_cls)
  ssl_cityscapes.ssl_sections(
      config, a=a, labeled=labeled, unlabeled=unlabeled, val=val,
      val_full=val, num_steps=20_000, step_size=15_000,
      class_names=(labels.CAMVID_CLASS_NAMES + ("unlabeled",))[:n_cls])
  config.eval.split = "test"
  if a.runlocal:
    config.train.num_steps = 4  # intervals and LR step follow
    config.eval.num_batches = 2
  return config
