r"""Source-domain SDE on Synthia sequences (ssda exp 310).

Same recipe as ``configs/sde_gta.py`` (R101 OS32 + dec11, Adam 1e-4 /
backbone 1e-5, 350k its), with SynthiaSeq intrinsics fx = fy = 532.740352 px
at 1280x760, principal point at the centre (as fractions of the image size).

  python -m sdeseg_jax.main --config=configs/sde_synthia.py:\
path=/data/synthia,imnet=/w/resnet101.npz,pose_imnet=/w/resnet18_x2.npz \
      --workdir=/runs/sde_synthia

The pseudo depth ``configs/ssda_synthia.py`` reads, over the Synthia
segmentation images (``RGB/``; same export as ``sde_gta.py``)::

  python -m sdeseg_jax.main --config=configs/sde_synthia.py:export=paper,\
path=/data/synthia --workdir=/runs/sde_synthia \
      --config.export.out_dir=/data/pseudo_depth/synthia
"""

from configs import sde_gta

VARIANTS = sde_gta.VARIANTS

INTRINSICS = (532.740352 / 1280, 532.740352 / 760, 0.5, 0.5)


def get_config(arg=None):
  return sde_gta.source_sde_config(arg, "synthia", INTRINSICS, "synthia")
