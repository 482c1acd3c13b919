"""MiniCity generator, dataset readers, tfds builders and grain pipelines."""
