r"""Automatic data selection on Cityscapes (IJCV §3.2, §4.4, Tables 1-2).

  python -m sdeseg_jax.main --workdir=/runs/select_ds_us_s42 \
      --config=configs/select_cityscapes.py:method=ds_us,seed=42,\
path=/data/cityscapes,teacher=/runs/sde_stage2,imnet=/w/r50.npz

Writes ``nlabels{25,50,100,200,372,744}_subset.json`` and
``selection_summary.json`` into the workdir (``sdeseg_jax/selection/
program.py``); ``configs/ssl_cityscapes.py:...,select=<that workdir>``
trains from them.

Arguments: ``method`` (ds_us | ds | us | entropy | random), ``seed``
(42 | 43 | 44; the seed image is the first element of
``np.random.RandomState(seed).permutation(2975)``), ``path`` (Cityscapes
root, 1024x512 images), ``teacher`` (the Cityscapes SDE workdir, R101 OS16
dec6: ``configs/sde_cityscapes.py:stage=2``), ``imnet`` (ResNet-50
ImageNet npz for the student's encoder, ``python -m
sdeseg_jax.models.pretrained --depth 50``), ``pseudo_depth`` (the
teacher's exported 8-bit pseudo depth of the train split; "" exports it
into the workdir), ``uncertainty`` (reference: the masked E of the code;
l1: the paper's plain L1), ``lambda_e`` (1000), ``steps`` (a factor on the
student iterations 4k..20k, e.g. 0.01 for a smoke run), ``runlocal``
(``steps`` at most 0.001: 4..20 student steps per round).
"""

from configs import common
from configs import ssl_cityscapes
from sdeseg_jax.data import labels

METHODS = ("ds_us", "ds", "us", "entropy", "random")
SEEDS = (42, 43, 44)
VARIANTS = tuple(f"method={m},seed={s}" for m in METHODS for s in SEEDS) + (
    "method=ds_us,uncertainty=l1",)
SCHEDULE = (25, 50, 100, 200, 372, 744)
STUDENT_STEPS = (4000, 8000, 12000, 16000, 20000)


def select_sections(config, *, method: str, seed: int, teacher: str,
                    schedule, student_steps, lambda_e: float,
                    uncertainty: str, batch_size: int, eval_batch_size: int,
                    class_names, lr: float = 1e-4):
  """The sections every selection config shares (``config.select``,
  ``config.loss``, ``config.train``, ``config.optim``)."""
  config.mode = "select"
  config.seed = seed
  sc = common.mlc.ConfigDict()
  sc.method = method
  sc.seed = seed                      # seed image / random permutation
  sc.schedule = tuple(schedule)       # cumulative sizes, one list each
  sc.student_steps = tuple(student_steps)  # before rounds 1..K
  sc.lambda_e = lambda_e              # weight of E in Eq. 4
  sc.uncertainty = uncertainty        # reference | l1
  sc.feature_stage = 3                # ("upconv", 3): second decoder stage
  sc.pool_hw = (4, 8)                 # adaptive average pool (H, W)
  sc.distance_block = 512             # rows per device distance block
  sc.batch_size = eval_batch_size     # teacher / scoring passes
  sc.teacher = common.mlc.ConfigDict(dict(checkpoint=teacher, step=-1))
  sc.class_names = tuple(class_names)
  config.select = sc
  # Student weights from an earlier run (the students' load_pretrained;
  # "" = the ImageNet encoder of config.model.encoder_init, or scratch).
  config.init = common.mlc.ConfigDict(dict(checkpoint="", step=-1,
                                           patterns=()))
  config.loss = common.mlc.ConfigDict(dict(
      berhu_rows=0.9,         # student berHu: rows >= 0.9 H masked
      uncertainty_rows=0.87,  # E: rows >= 0.87 H zeroed (ego car)
      low_disp=0.07,          # E: dilated mask of teacher disparity < 0.07
      dilation=7))
  config.train = common.train_config(
      num_steps=int(student_steps[0]) if student_steps else 1,
      batch_size=batch_size, seed=seed, log_every=100, eval_every=0,
      image_every=0, checkpoint_every=1000)
  # Adam 1e-4 for every group, LambdaLR max(1e-6, (1 - it/iters)^0.9);
  # decay_steps is set to each round's iterations.
  config.optim = common.optim_config(
      name="adam", lr=lr, schedule="poly", poly_power=0.9,
      decay_steps=config.train.num_steps)
  config.optim.poly_floor = 1e-6
  return config


def parse_sizes(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split("-") if v)


def get_config(arg=None):
  a = common.parse_arg(
      arg, method="ds_us", seed=42, path="", teacher="", imnet="",
      pseudo_depth="", uncertainty="reference", lambda_e=1000.0, steps=1.0,
      schedule="-".join(str(n) for n in SCHEDULE), runlocal=False)
  if a.runlocal:  # the whole program at a few student steps per round
    a.steps = min(a.steps, 1e-3)
  config = common.mlc.ConfigDict()
  pool = common.stream_config(
      "cityscapes_select", "cityscapes", path=a.path,
      image_size=(512, 1024), crop_size=(), flip_prob=0.0,
      pseudo_depth_dir=a.pseudo_depth, pseudo_depth_encoding="u8")
  student = common.stream_config(
      "cityscapes_select", "cityscapes", path=a.path,
      image_size=(512, 1024), crop_size=(512, 512), flip_prob=0.5,
      pseudo_depth_dir=a.pseudo_depth, pseudo_depth_encoding="u8")
  config.data = common.data_config(pool=pool, student=student)
  config.teacher_model = common.model_config("sde")
  config.model = common.model_config("student", encoder_init=a.imnet)
  steps = tuple(max(1, int(round(s * a.steps))) for s in STUDENT_STEPS)
  select_sections(
      config, method=a.method, seed=a.seed, teacher=a.teacher,
      schedule=parse_sizes(a.schedule), student_steps=steps,
      lambda_e=a.lambda_e, uncertainty=a.uncertainty, batch_size=2,
      eval_batch_size=2, class_names=labels.CLASS_NAMES)
  return config
