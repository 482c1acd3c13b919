r"""Mode ``predict``: a trained run on your own images, folders or videos.

  python -m sdeseg_jax.main --workdir=OUT \
      --config=configs/predict.py:run=/tmp/sdeseg_demo/ssda,input=/my/frames

Arguments (all optional except ``run`` and ``input``):

* ``run``: a training workdir (mode sde/ssl/ssda; the demo's ``<W>/ssda``);
* ``input``: a folder, a glob (quote it), an image list file or a video;
* ``step``: ``latest`` (default), ``best`` or a step number;
* ``model``: ``student`` (default) or ``teacher`` (the EMA teacher);
* ``resolution``: ``resize`` (to the training resolution, default) or
  ``sliding`` (windows at native resolution);
* ``fps``: video frames kept per second (0 = every frame);
* ``batch``: images per compiled call; ``alpha``: overlay opacity;
* ``overwrite``: redo everything in ``--workdir``.

Outputs and formats: ``sdeseg_jax/predict/predict.py`` and
``docs/workflows/predict.md``. ``input_size``, ``window`` and ``overlap``
(``--config.predict.input_size='(512, 1024)'``) default to the run's own
training resolution and crop.
"""

from configs import common

VARIANTS = ("run=/tmp/run,input=/tmp/images",
            "run=/tmp/run,input=/tmp/v.mp4,fps=2,model=teacher,"
            "resolution=sliding")


def get_config(arg=None):
  a = common.parse_arg(arg, run="", input="", step="latest", model="student",
                       resolution="resize", fps=0.0, batch=4, alpha=0.5,
                       overwrite=False, runlocal=False)
  if a.runlocal:  # a quick local check: one image per call
    a.batch = 1
  config = common.mlc.ConfigDict()
  config.mode = "predict"
  config.predict = common.mlc.ConfigDict(dict(
      run=a.run, input=a.input, step=a.step, model=a.model,
      resolution=a.resolution,
      input_size=(),   # (H, W) network input of resize; () = the run's
      window=(),       # (H, W) sliding window; () = the run's training crop
      overlap=1 / 3,   # sliding-window overlap fraction
      fps=a.fps, batch_size=a.batch, alpha=a.alpha, overwrite=a.overwrite,
      # A config file whose ``model`` section replaces the saved one
      # (checkpoints whose saved config no longer builds); "" = saved.
      model_config=""))
  return config
