"""Shared test inputs and the torch re-implementations of monodepth2 layers.

The torch functions are written after monodepth2's loss (NCHW); they are the
oracles the jnp losses are compared against. ``torch`` is None when PyTorch is
not installed, and tests that need it skip.
"""

import numpy as np

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None


def uniform(seed, shape, lo=0.0, hi=1.0):
  # numpy RNG: eager jax.random compiles a kernel per shape (slow on CPU CI).
  return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def to_nchw(x):
  """NHWC (jax/numpy) -> NCHW torch tensor."""
  return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()


def torch_ssim(x, y):
  """monodepth2's SSIM layer (NCHW) -> loss map."""
  pad = torch.nn.ReflectionPad2d(1)
  pool = torch.nn.AvgPool2d(3, 1)
  x, y = pad(x), pad(y)
  mu_x, mu_y = pool(x), pool(y)
  sigma_x = pool(x ** 2) - mu_x ** 2
  sigma_y = pool(y ** 2) - mu_y ** 2
  sigma_xy = pool(x * y) - mu_x * mu_y
  n = (2 * mu_x * mu_y + 0.01 ** 2) * (2 * sigma_xy + 0.03 ** 2)
  d = (mu_x ** 2 + mu_y ** 2 + 0.01 ** 2) * (sigma_x + sigma_y + 0.03 ** 2)
  return torch.clamp((1 - n / d) / 2, 0, 1)


def torch_edge_smoothness(disp, img):
  """monodepth2 ``get_smooth_loss`` on an already mean-normalised disp."""
  gdx = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
  gdy = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
  gix = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, True)
  giy = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, True)
  return (gdx * torch.exp(-gix)).mean() + (gdy * torch.exp(-giy)).mean()
