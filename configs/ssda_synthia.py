r"""SSDA Synthia -> Cityscapes (IJCV Tables 13, 14, 16).

Same recipe and arguments as ``configs/ssda_gta.py`` (``row``, ``n``,
``labels``, ``depth_scale``, ``fs_miou``, ``seed``, ``runlocal``), with the Synthia
source (``<data_root>/synthia``: ``RGB(_small)/``,
``synthia_mapped_to_cityscapes/``; pseudo depth of the Synthia SDE in
``<data_root>/pseudo_depth/synthia``). The network keeps 19 classes, as the
reference; the evaluator reports the 16- and 13-class mIoU (``miou16``,
``miou13``) itself, and the "relative to fully supervised" column of
Table 16 is computed on the 16-class mIoU.

  python -m sdeseg_jax.main --config=configs/ssda_synthia.py:row=cdm_tdm \
      --config.data_root=/data --workdir=/runs/ssda_synthia

Before it, the pseudo depth of both domains for the run's depth scale
``S`` (``paper`` by default; ``docs/reproduce.md``, SSDA section)::

  python -m sdeseg_jax.main --workdir=/data/sde_cityscapes \
      --config=configs/sde_cityscapes.py:stage=2,export=S,\
path=/data/cityscapes --config.export.out_dir=/data/pseudo_depth/cityscapes
  python -m sdeseg_jax.main --workdir=/runs/sde_synthia \
      --config=configs/sde_synthia.py:export=S,path=/data/synthia \
      --config.export.out_dir=/data/pseudo_depth/synthia
"""

from configs import ssda_gta
from sdeseg_jax.data import labels

VARIANTS = ssda_gta.VARIANTS


def get_config(arg=None):
  config = ssda_gta.real_config(
      arg, source_layout="synthia", source_folder="synthia",
      class_subsets=(("miou16", labels.SYNTHIA_16_TRAIN_IDS),
                     ("miou13", labels.SYNTHIA_13_TRAIN_IDS)),
      relative_to="miou16")
  config.eval.table_classes = labels.SYNTHIA_16_TRAIN_IDS
  return config
