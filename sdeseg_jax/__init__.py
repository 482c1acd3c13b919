"""sdeseg_jax: semantic segmentation improved by self-supervised depth, in JAX."""

__version__ = "0.1.0"

# XLA reads XLA_FLAGS when the first backend starts: set the project's CPU
# compiler defaults now, before anything imports jax and touches a device
# (sdeseg_jax/utils/compiler.py; SDESEG_CPU_YNN=1 opts out).
from sdeseg_jax.utils import compiler as _compiler  # noqa: E402

_compiler.apply_defaults()
