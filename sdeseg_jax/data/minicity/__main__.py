"""``python -m sdeseg_jax.data.minicity``: see ``dataset.main``."""

import sys

from sdeseg_jax.data.minicity import dataset

if __name__ == "__main__":
  sys.exit(dataset.main())
