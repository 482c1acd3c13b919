r"""Mode ``demo``: MiniCity end to end on a laptop.

  python -m sdeseg_jax.main --config=configs/demo.py --workdir=/tmp/demo

Stages (each skipped when its output exists, so a rerun resumes):
generate MiniCity (cityscapes layout = target, gta5 layout = source) into
``<workdir>/data/``, prepare both as tfds array_record, print statistics.
``--config=configs/demo.py:tiny`` shrinks everything for a quick check.
"""

from configs import common

VARIANTS = ("tiny",)


def get_config(arg=None):
  a = common.parse_arg(arg, tiny=False)
  config = common.mlc.ConfigDict()
  config.mode = "demo"
  config.seed = 0
  n_train, n_val = (4, 2) if a.tiny else (24, 6)
  width, height = (64, 32) if a.tiny else (256, 128)
  config.minicity = common.mlc.ConfigDict()
  config.minicity.target = common.minicity_config(
      layout="cityscapes", seed=0, width=width, height=height,
      num_train_sequences=n_train, num_val_sequences=n_val)
  config.minicity.source = common.minicity_config(
      layout="gta5", seed=1, width=width, height=height,
      num_train_sequences=n_train, num_val_sequences=n_val)
  # Paths are filled in by the demo (<workdir>/data/<stream name>).
  crop = (height, height)
  config.data = common.data_config(
      target=common.stream_config(
          "minicity_cityscapes", "cityscapes", frame_offsets=(-1, 0, 1),
          image_size=(height, width), crop_size=crop, with_depth=True,
          full_res=(width, height)),
      source=common.stream_config(
          "minicity_gta5", "gta5", image_size=(height, width),
          crop_size=crop, with_depth=True, val_count=n_val,
          full_res=(width, height)),
  )
  return config
