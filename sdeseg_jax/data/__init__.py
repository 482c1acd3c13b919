"""MiniCity generator, dataset readers, tfds builders and grain pipelines.

* ``minicity``: procedural datasets in the real layouts (tests, demo).
* ``labels``: label tables and id -> train id LUTs.
* ``readers``: real layouts -> sorted sample lists; ``DatasetError``.
* ``downsample``: the reference's offline 1024x512 JPEG preprocessing (CLI).
* ``builder``: tfds builder -> array_record splits (``prepare``).
* ``transforms``: per-sample grain transforms (crop/flip/K/pyramid/jitter).
* ``pipeline``: ``make_loader`` -> global ``jax.Array`` batches.
* ``prepare``: mode ``prepare`` and dataset statistics.
"""
