r"""Mode ``prepare``: one dataset folder -> tfds array_record + statistics.

  python -m sdeseg_jax.main --workdir=/tmp/prep \
      --config=configs/prepare.py:layout=cityscapes,path=/data/cityscapes

Arguments: ``layout`` (cityscapes | gta5 | synthia | camvid), ``path`` (the
dataset folder), ``name`` (stream/tfds config name, default the layout),
``offsets`` (frame offsets separated by "/", e.g. ``-1/0/1``), ``all_frames``
(every sequence frame with neighbours), ``val_count`` (gta5/synthia),
``runlocal`` (in-process reading, no grain worker processes).
"""

from configs import common

VARIANTS = ("layout=gta5,val_count=6", "layout=cityscapes,offsets=-1/0/1",
            "runlocal")


def get_config(arg=None):
  a = common.parse_arg(arg, layout="cityscapes", path="", name="",
                       offsets="0", all_frames=False, val_count=500,
                       runlocal=False)
  config = common.mlc.ConfigDict()
  config.mode = "prepare"
  config.prepare_stream = "stream"
  try:
    offsets = tuple(int(o) for o in a.offsets.split("/"))
  except ValueError:
    raise ValueError(f"config argument offsets={a.offsets!r}: expected "
                     "integers separated by '/', e.g. offsets=-1/0/1") from None
  config.data = common.data_config(stream=common.stream_config(
      a.name or a.layout, a.layout, path=a.path, frame_offsets=offsets,
      all_frames=a.all_frames, val_count=a.val_count,
      num_workers=0 if a.runlocal else 2))
  return config
