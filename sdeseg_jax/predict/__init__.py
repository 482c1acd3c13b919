"""Using trained runs: ``mode=predict`` on any images or videos,
``mode=evaluate`` of any checkpoint, and the ``aggregate`` table of seed runs.

* ``runs``: a training workdir's saved config, checkpoint steps (latest, best,
  a number) and student / EMA-teacher variables;
* ``records``: the evaluation records a run wrote (per-class IoU per step);
* ``inputs``: folders, globs, list files and videos as a stream of frames;
* ``predict``: ``mode=predict`` (``configs/predict.py``);
* ``evaluate``: ``mode=evaluate`` (``configs/evaluate.py``);
* ``aggregate``: ``python -m sdeseg_jax.predict.aggregate``.
"""
