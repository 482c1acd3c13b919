r"""Automatic data selection on MiniCity, sized for a CPU.

  python -m sdeseg_jax.main --config=configs/sde_minicity.py --workdir=T
  python -m sdeseg_jax.main --workdir=W \
      --config=configs/select_minicity.py:method=ds_us,teacher=T

The program of ``configs/select_cityscapes.py`` on a generated MiniCity
(cityscapes layout, ``height`` x ``image_width``, ``sequences`` training
images, generated into ``<workdir>/data/minicity`` unless ``path=``), with
the teacher of ``configs/sde_minicity.py`` (same ``width``; its default
world is 64x128 like this one's), a tiny depth student (ResNet-10 of width
``student_width``, the tiny decoder, the transfer student head) and a short
schedule (``schedule``, sizes joined by ``-``; ``steps``: student
iterations before each later round, also ``-``-joined or one number for
all). ``runlocal``: 32x64 images, 8 sequences, schedule 2-4-6, 2 steps.
"""

from configs import common
from configs import select_cityscapes
from sdeseg_jax.data import labels

VARIANTS = tuple(f"method={m}" for m in select_cityscapes.METHODS) + (
    "runlocal", "runlocal,method=entropy")


def get_config(arg=None):
  a = common.parse_arg(
      arg, method="ds_us", seed=42, path="", teacher="", pseudo_depth="",
      uncertainty="reference", lambda_e=1000.0, schedule="8-16-24-32",
      steps="100", width=16, student_width=8, sequences=48, height=64,
      image_width=128, crop=64, lr=1e-3, runlocal=False)
  h, w, n_train, crop = a.height, a.image_width, a.sequences, a.crop
  schedule = select_cityscapes.parse_sizes(a.schedule)
  steps = select_cityscapes.parse_sizes(a.steps)
  if a.runlocal:
    h, w, n_train, crop = 32, 64, 8, 32
    schedule, steps = (2, 4, 6), (2,)
  if len(steps) == 1:
    steps = steps * max(1, len(schedule) - 1)
  config = common.mlc.ConfigDict()
  config.minicity = common.minicity_config(
      layout="cityscapes", seed=0, width=w, height=h,
      num_train_sequences=n_train, num_val_sequences=2)
  stream = dict(path=a.path, image_size=(h, w), intrinsics_mode="exact",
                full_res=(w, h), num_workers=0,
                pseudo_depth_dir=a.pseudo_depth,
                pseudo_depth_encoding="u8")
  pool = common.stream_config("minicity_select", "cityscapes", **stream,
                              crop_size=(), flip_prob=0.0)
  student = common.stream_config("minicity_select", "cityscapes", **stream,
                                 crop_size=(crop, crop), flip_prob=0.5)
  config.data = common.data_config(pool=pool, student=student)
  config.teacher_model = common.model_config(
      "sde", encoder_depth=18, width=a.width, decoder="dec_tiny",
      pose_depth=10)
  config.model = common.model_config(
      "student", encoder_depth=10, width=a.student_width,
      decoder="dec_tiny")
  select_cityscapes.select_sections(
      config, method=a.method, seed=a.seed, teacher=a.teacher,
      schedule=schedule, student_steps=steps, lambda_e=a.lambda_e,
      uncertainty=a.uncertainty, batch_size=4, eval_batch_size=4,
      class_names=labels.CLASS_NAMES, lr=a.lr)
  config.train.update(log_every=max(1, min(steps) // 2),
                      checkpoint_every=max(1, min(steps) // 2))
  return config
