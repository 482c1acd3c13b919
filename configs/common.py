"""Shared config pieces. Each ``*_config`` function builds one section.

Config files call these and override what differs, so that a key is defined
in one place and every config that uses it gets the same name and default.
Follows big_vision's ``parse_arg`` convention for ``--config=file.py:arg``.
"""

from __future__ import annotations

import ml_collections as mlc


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _typed(key: str, value: str, default):
  """``value`` (text) converted to the type of ``default``, or a clear error."""
  def fail(form: str):
    return ValueError(
        f"config argument {key}={value!r}: expected {form} (the default is "
        f"{default!r})")

  if isinstance(default, bool):
    if value.lower() in _TRUE:
      return True
    if value.lower() in _FALSE:
      return False
    raise fail("true/false/1/0/yes/no (or a bare `" + key + "` for true)")
  if isinstance(default, int):
    try:
      return int(value)
    except ValueError:
      raise fail("an integer, e.g. " + f"{key}={default}") from None
  if isinstance(default, float):
    try:
      return float(value)
    except ValueError:
      raise fail("a number, e.g. " + f"{key}={default}") from None
  if default is None or isinstance(default, str):
    return value
  raise TypeError(f"parse_arg: argument {key!r} has a default of type "
                  f"{type(default).__name__}; use bool, int, float or str")


def parse_arg(arg: str | None, **spec) -> mlc.ConfigDict:
  """Parses a config file's argument ``"k1=v1,k2"`` with typed defaults.

  The part of ``--config=configs/x.py:<arg>`` after the colon. Each value
  takes the type of its default in ``spec``: booleans accept only
  true/false/1/0/yes/no (any case), and a bare ``k`` means ``k=true``; ints
  and floats must parse; strings are taken as given. Anything else (an
  unknown name, ``runlocal=ture``, ``steps=ten``, a bare non-boolean) raises
  ValueError naming the argument, its value and the accepted form.

  Args:
    arg: the argument text, or None / "" for all defaults.
    **spec: argument names and their defaults (bool, int, float, str).

  Returns:
    A ConfigDict of every argument in ``spec``.

  Raises:
    ValueError: for an unknown argument or a value of the wrong form.
  """
  res = mlc.ConfigDict(spec)
  for part in (arg or "").split(","):
    if not part:
      continue
    key, eq, value = part.partition("=")
    key = key.strip()
    if key not in spec:
      raise ValueError(
          f"unknown config argument {key!r} (in {arg!r}); known: "
          f"{', '.join(sorted(spec))}")
    default = spec[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(
            f"config argument {key!r} needs a value: {key}=<value> (the "
            f"default is {default!r}); only true/false arguments may stand "
            "alone")
      res[key] = True
    else:
      res[key] = _typed(key, value, default)
  return res


def strict_update(c: mlc.ConfigDict, overrides: dict,
                  section: str) -> mlc.ConfigDict:
  """``c.update(overrides)``, refusing keys ``c`` does not have.

  Args:
    c: the section built with every key and its default.
    overrides: keyword overrides given to the builder.
    section: the section, for the message (e.g. "train config").

  Returns:
    ``c``, updated.

  Raises:
    ValueError: naming the unknown keys and the known ones.
  """
  unknown = sorted(set(overrides) - set(c.keys()))
  if unknown:
    raise ValueError(
        f"unknown {section} keys {unknown}; known: {sorted(c.keys())}")
  c.update(overrides)
  return c


def derived(ref: mlc.FieldReference, fn) -> mlc.FieldReference:
  """An int field computed from ``ref`` (e.g. ``num_steps``) when read.

  Intervals and LR steps that depend on the run length follow a later
  ``runlocal`` block or a ``--config.train.num_steps=N`` override; setting
  the derived key itself (``--config.optim.step_size=5``) replaces it.

  Args:
    ref: an int reference, ``config.train.get_ref("num_steps")``.
    fn: int -> int.

  Returns:
    A FieldReference of type int.
  """
  # pylint: disable-next=protected-access
  op = mlc.config_dict.config_dict._Op(lambda v: int(fn(v)), [])
  return mlc.FieldReference(ref, field_type=int, op=op)


def same_as(ref: mlc.FieldReference) -> mlc.FieldReference:
  """An int field equal to ``ref`` until it is set itself.

  Unlike assigning ``ref`` (``get_ref``) directly, setting the follower
  (``--config.train.seed=3``) leaves ``ref`` alone: the link is one-way.
  """
  return derived(ref, lambda v: v)


def every(num_steps: mlc.FieldReference, interval: int,
          parts: int) -> mlc.FieldReference:
  """``min(interval, max(1, ceil(num_steps / parts)))``, following num_steps.

  The full run keeps the reference's ``interval``; a short run (runlocal,
  a smoke test) still logs / evaluates / checkpoints about ``parts`` times.
  """
  return derived(num_steps, lambda n: min(interval, max(1, -(-n // parts))))


def set_intervals(train: mlc.ConfigDict, *, log: tuple[int, int],
                  eval_: tuple[int, int],
                  checkpoint: tuple[int, int]) -> None:
  """Sets ``train``'s log / eval / image / checkpoint intervals, each
  ``(interval, parts)`` of :func:`every` on ``train.num_steps``; images
  follow ``eval_every``. A later ``num_steps`` (runlocal, ``--config.``)
  moves them all.
  """
  n = train.get_ref("num_steps")
  train.log_every = every(n, *log)
  train.eval_every = every(n, *eval_)
  train.image_every = same_as(train.get_ref("eval_every"))
  train.checkpoint_every = every(n, *checkpoint)


def minicity_config(**overrides) -> mlc.ConfigDict:
  """Generation settings of a MiniCity dataset (see sdeseg_jax/data/minicity)."""
  c = mlc.ConfigDict()
  c.layout = "cityscapes"   # cityscapes | gta5 | synthia
  c.seed = 0
  c.width = 256             # 1/4 of the preprocessed 1024x512 per side
  c.height = 128
  c.num_train_sequences = 24
  c.num_val_sequences = 6
  c.frames_per_sequence = 3  # rendered frames around the annotated one
  strict_update(c, overrides, "minicity config")
  return c


def train_config(*, batch_size: int | None = 4,
                 **overrides) -> mlc.ConfigDict:
  """Settings of the training loop (``sdeseg_jax.train.trainer``).

  Intervals are in optimiser steps; ``0`` disables an action. The final step
  always logs, evaluates and checkpoints.

  Args:
    batch_size: the global batch, split over all devices; None for a task
      that sets its batch sizes elsewhere (SSDA: ``config.ssda.batch_*``),
      which then has no ``batch_size`` key.
    **overrides: any key below.
  """
  c = mlc.ConfigDict()
  c.num_steps = 1000
  if batch_size is not None:
    c.batch_size = batch_size
  c.seed = 0
  c.log_every = 50
  c.eval_every = 500
  c.image_every = 500       # TensorBoard panels (input/prediction/GT)
  c.checkpoint_every = 500
  c.max_to_keep = 3
  c.profile = False         # clu Profile hook around a few steps
  # Mean teacher: alpha_t = min(1 - 1/(t+1), ema_decay) after every update.
  c.use_ema = False
  c.ema_decay = 0.99
  # The teacher's BatchNorm statistics (sdeseg_jax/mixing/teacher.py): own
  # (reference: updated by its own train-mode forwards) | ema (averaged
  # student statistics) | student (a copy of the student's).
  c.teacher_batch_stats = "own"
  strict_update(c, overrides, "train config")
  return c


def optim_config(**overrides) -> mlc.ConfigDict:
  """Optimiser, learning-rate groups and schedule (``train/optim.py``).

  ``groups`` is a tuple of ``(regex, lr)`` over ``/``-joined parameter paths
  (first match wins, ``lr="frozen"`` freezes); the rest trains at ``lr``.
  """
  c = mlc.ConfigDict()
  c.name = "adam"           # adam | sgd
  c.lr = 1e-4
  c.groups = ()
  c.momentum = 0.9          # sgd
  c.weight_decay = 0.0      # coupled L2, as torch
  c.b1 = 0.9                # adam
  c.b2 = 0.999
  c.eps = 1e-8
  c.schedule = "constant"   # constant | step | multistep | poly
  c.step_size = 30000       # step
  c.milestones = (160000,)  # multistep
  c.gamma = 0.1
  c.decay_steps = 40000     # poly
  c.poly_power = 0.9
  c.clip_norm = 0.0         # <= 0: no clipping
  strict_update(c, overrides, "optim config")
  return c


def sde_loss_config(**overrides) -> mlc.ConfigDict:
  """monodepth2 self-supervised depth loss, with the reference's constants.

  Read by ``sdeseg_jax.losses.monodepth_loss``; ``feature_distance_weight``
  (lambda_F, 1e-2 in SDE stage 2) is applied by the training step.
  """
  c = mlc.ConfigDict()
  c.min_depth = 0.1
  c.max_depth = 100.0
  c.scales = (0, 1, 2, 3)
  c.frame_offsets = (-1, 0, 1)  # must match the data's frame_offsets
  c.ssim_weight = 0.85          # 0: pure L1 (monodepth2 no_ssim)
  c.smoothness_weight = 1e-3    # divided by 2**s per scale
  c.automask = True             # identity errors join the per-pixel minimum
  c.avg_reprojection = False    # average, not min, over source frames
  c.identity_noise = 1e-5       # std of the tie-breaking noise
  c.feature_distance_weight = 0.0
  # Diagnostic oracle (mode=sde only): warp with the ground-truth poses
  # (`gt_cam_T_cam`, needs a MiniCity stream with `with_pose`) instead of the
  # pose net's, to separate depth learning from pose learning.
  c.gt_pose = False
  strict_update(c, overrides, "sde loss config")
  return c


def model_config(variant: str = "ssl", **overrides) -> mlc.ConfigDict:
  """Network settings, read by ``sdeseg_jax.models.joint.from_config``.

  Variants (the reference's networks and config defaults):
    ``"sde"``: Cityscapes SDE pretraining net, R101 OS16, dec6, pose net, no
      segmentation head (``SDENet``).
    ``"sde_source"``: source-domain SDE (ssda ``sde_dec11``), R101 OS32, dec11.
    ``"ssl"``: main multi-task net (master 212 / ssda 262), R101 OS16, dec6,
      PAD head, pose net.
    ``"transfer"``: R101 OS16 with the transfer head (layers 9, OS1).
    ``"student"``: data-selection SIDE student, R50 OS16, dec9, transfer
      student head (layers 8, OS2), depth decoder, no pose net.
    ``"tiny"``: test-only, ResNet-10 of width 16, ``dec_tiny``, PAD head.

  Args:
    variant: one of the names above.
    **overrides: keys to replace after the variant is applied.

  Returns:
    A ConfigDict with ``encoder_depth`` (10|18|34|50|101), ``output_stride``
    (16|32), ``width`` (ResNet base width), ``decoder``
    (variant name in ``sdeseg_jax.models.decoders.DECODER_VARIANTS``),
    ``seg_head`` (none|pad|transfer|transfer_student), ``num_classes``,
    ``depth`` (depth outputs of a transfer-head net), ``pose``,
    ``pose_depth``, ``imnet_encoder`` (frozen ImageNet copy for the feature
    distance; SDE only), ``dtype`` (compute dtype name), ``remat``
    (``models.layers.REMAT_POLICIES``), ``encoder_init`` and
    ``pose_encoder_init`` (npz files written by
    ``python -m sdeseg_jax.models.pretrained``; empty for random init),
    ``pose_translation_prior`` (3 floats or (); SDE pretraining only).
  """
  c = mlc.ConfigDict()
  c.encoder_depth = 101
  c.output_stride = 16
  c.width = 64
  c.decoder = "dec6"
  c.seg_head = "pad"
  c.num_classes = 19
  c.depth = True
  c.pose = True
  c.pose_depth = 18
  c.imnet_encoder = False
  c.dtype = "float32"
  c.remat = "none"          # models.layers.REMAT_POLICIES
  c.encoder_init = ""
  c.pose_encoder_init = ""
  # Initial translation of the pose net (() = none, the reference): e.g.
  # (0, 0, -0.01) for a forward-moving camera; models.pose.
  # with_translation_prior. Applied to fresh SDE runs only.
  c.pose_translation_prior = ()
  if variant == "sde":
    c.seg_head = "none"
  elif variant == "sde_source":
    c.seg_head = "none"
    c.output_stride = 32
    c.decoder = "dec11"
  elif variant == "ssl":
    pass
  elif variant == "transfer":
    c.seg_head = "transfer"
  elif variant == "student":
    c.encoder_depth = 50
    c.decoder = "dec9"
    c.seg_head = "transfer_student"
    c.pose = False
  elif variant == "tiny":
    c.encoder_depth = 10
    c.width = 16
    c.decoder = "dec_tiny"
    c.pose_depth = 10
  else:
    raise ValueError(f"unknown model variant {variant!r}; known: sde, "
                     "sde_source, ssl, transfer, student, tiny")
  strict_update(c, overrides, "model config")
  return c


def stream_config(name: str, layout: str, **overrides) -> mlc.ConfigDict:
  """One input stream: a dataset folder, how it is prepared and delivered.

  Read by ``sdeseg_jax.data.pipeline.make_loader`` (delivery) and
  ``sdeseg_jax.data.builder`` (preparation; the keys marked [prep] change
  what is stored, and changing them prepares a new tfds config).

  Args:
    name: stream name, also the tfds config name prefix (e.g. "cityscapes").
    layout: cityscapes | gta5 | synthia | camvid.
    **overrides: any key below.
  """
  c = mlc.ConfigDict()
  c.name = name
  c.layout = layout                 # [prep]
  c.path = ""                       # dataset folder (tfds manual_dir)
  c.sequence_path = ""              # [prep] GTASeq/Synthia sequence folder;
                                    # "" = <path>/sequences (gta5), <path>
  c.image_folder = "auto"           # [prep] auto | full | small (_small
                                    # preprocessed folders, downsample CLI)
  c.frame_offsets = (0,)            # [prep] e.g. (-1, 0, 1) for SDE
  c.all_frames = False              # [prep] every sequence frame with
                                    # neighbours (SDE pretraining)
  c.val_count = 500                 # [prep] gta5/synthia: last N sorted = val
  c.intrinsics = ()                 # [prep] (fx/W, fy/H, cx/W, cy/H); () =
                                    # dataset default / camera files / sidecar
  c.full_res = ()                   # [prep] (W, H) of the full-res images
  c.image_size = (512, 1024)        # (H, W) frames are resized to (Lanczos)
  c.crop_size = (512, 512)          # (h, w) training crop; () = no crop
  c.flip_prob = 0.5
  c.color_aug = False               # SDE colour augmentation on color_aug
  c.num_scales = 4                  # pyramid s1..s3 of the centre frame
  c.intrinsics_mode = "ssda"        # ssda | exact | master_compat
  c.with_depth = False              # deliver ground-truth `depth`
  c.with_pose = False               # [prep] deliver `gt_cam_T_cam` from the
                                    # MiniCity sidecar's per-frame poses
                                    # (error without minicity.json)
  c.pseudo_depth_dir = ""           # deliver `pseudo_depth` from this folder
  c.pseudo_depth_encoding = "u8"    # u8 (/255) | u16 (/65535)
  c.keep_classes = ()               # train ids kept in `label` (others
                                    # 250), e.g. labels.SYNTHIA_16_TRAIN_IDS;
                                    # () = all 19 (the reference's default)
  c.subset = mlc.ConfigDict()
  c.subset.mode = "all"             # all | random | fixed
  c.subset.n = 0                    # random: number of labeled images;
                                    # fixed: first n of the list (0 = all)
  c.subset.seed = 42                # random: np.random.seed of the reference
  c.subset.file = ""                # fixed: JSON list of indices
  c.load_labeled = True             # deliver the labeled subset
  c.load_unlabeled = False          # deliver the rest (label all 250)
  c.num_workers = 2                 # grain worker processes (0 = in-process)
  c.worker_buffer_size = 2          # batches buffered per worker
  strict_update(c, overrides, "stream config")
  return c


def data_config(**streams: mlc.ConfigDict) -> mlc.ConfigDict:
  """The ``config.data`` section: the tfds directory plus named streams.

  Args:
    **streams: stream configs by role, e.g. ``target=stream_config(...)``.
  """
  c = mlc.ConfigDict()
  c.tfds_dir = ""  # "" = <workdir>/tfds
  for k, v in streams.items():
    c[k] = v
  return c
