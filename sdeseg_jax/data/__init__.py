"""MiniCity generator, dataset readers, tfds builders and grain pipelines.

* ``resolve``: where a run's data comes from (dataset roots, MiniCity
  generated into the workdir, folder checks); every mode resolves here.
* ``layouts``: the registry of dataset layouts (folders, splits, label
  tables, default cameras).
* ``minicity``: procedural datasets in the real layouts (tests, demo).
* ``labels``: label tables and id -> train id LUTs.
* ``readers``: real layouts -> sorted sample lists; ``DatasetError``.
* ``downsample``: the reference's offline 1024x512 JPEG preprocessing (CLI).
* ``builder``: tfds builder -> array_record splits (``prepare``), prepared
  again when the source folder changed.
* ``transforms``: per-sample grain transforms (crop/flip/K/pyramid/jitter).
* ``pipeline``: ``make_loader`` -> per-process numpy batches (the trainer
  shards them).
* ``streams``: several loaders behind one (``NamedIterators``), Matching
  Geometry candidates.
* ``prepare``: mode ``prepare`` and dataset statistics.
"""
