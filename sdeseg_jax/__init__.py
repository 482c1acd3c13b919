"""sdeseg_jax: semantic segmentation improved by self-supervised depth, in JAX."""

__version__ = "0.1.0"
