"""Shared helpers of the model tests (loaded by path: importlib mode)."""

import importlib.util
import os

import numpy as np


def load_torch_ref():
  """Returns the ``torch_ref`` module, or None when torch is not installed."""
  if importlib.util.find_spec("torch") is None:
    return None
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "torch_ref.py")
  spec = importlib.util.spec_from_file_location("sdeseg_models_torch_ref",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def nchw(x):
  """Torch NCHW tensor -> NHWC numpy."""
  return np.transpose(x.detach().numpy(), (0, 2, 3, 1))


def nhwc_to_torch(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(
      np.transpose(np.asarray(x), (0, 3, 1, 2))))


def random_variables(module, *args, seed=0, **kwargs):
  """Random variables of ``module`` without running its (slow) init.

  ``jax.eval_shape`` gives the tree; kernels are drawn N(0, 1/fan_in),
  biases/BN params near their init, running stats positive. Much faster on
  a CPU than compiling every initialiser of a deep net.
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  # Keyword arguments (e.g. frame_offsets) stay static Python values.
  abstract = jax.eval_shape(functools.partial(module.init, **kwargs),
                            jax.random.key(0), *args)
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(dict(abstract))
  out = {}
  for path, leaf in flat.items():
    shape, name = tuple(leaf.shape), path[-1]
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
    elif name == "scale":
      value = 1.0 + 0.1 * rng.normal(size=shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, size=shape)
    else:  # bias, mean
      value = 0.1 * rng.normal(size=shape)
    out[path] = value.astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)
