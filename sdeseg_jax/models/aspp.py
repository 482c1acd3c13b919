"""Atrous spatial pyramid pooling (the reference's ``model_parts.ASPP``).

Branches, in the reference's order: 1x1 conv; one dilated 3x3 conv per rate;
image pooling (global mean -> 1x1 conv -> BN -> ReLU -> bilinear upsample).
Each conv is bias-free and followed by BN + ReLU. The concatenation goes
through a 1x1 conv + BN + ReLU + element-wise Dropout(0.5).

Submodule names mirror the torch parameter names (``convs_0_0`` is
``convs.0.0``; the pooling branch is ``convs_{n}_1`` / ``convs_{n}_2`` because
index 0 of the torch Sequential is the parameter-free pooling layer).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.layers import BatchNorm, Conv2d

Dtype = Any


class ASPP(nn.Module):
  """ASPP head.

  The pooling branch applies BatchNorm to a ``[B, 1, 1, C]`` map, i.e. in
  train mode it normalises B values per channel (as the
  reference does; replicated). Its bilinear upsample from 1x1 is a broadcast.

  Attributes:
    rates: atrous rates of the 3x3 branches, e.g. ``(6, 12, 18)``.
    features: output channels of every branch and of the projection.
    dropout_rate: dropout after the projection (active when ``train``; needs
      the ``"dropout"`` rng).
  """
  rates: Sequence[int] = (6, 12, 18)
  features: int = 256
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """``[B, H, W, C_in]`` -> ``[B, H, W, features]`` in ``dtype``."""
    bn = lambda name: BatchNorm(  # noqa: E731
        use_running_average=not train, dtype=self.dtype, name=name)
    conv = lambda k, p, d, name: Conv2d(  # noqa: E731
        self.features, k, 1, p, d, use_bias=False, dtype=self.dtype,
        name=name)
    res = [nn.relu(bn("convs_0_1")(conv(1, 0, 1, "convs_0_0")(x)))]
    for j, r in enumerate(self.rates, start=1):
      res.append(nn.relu(bn(f"convs_{j}_1")(conv(3, r, r, f"convs_{j}_0")(x))))
    n = len(self.rates) + 1
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True)
    pooled = nn.relu(bn(f"convs_{n}_2")(conv(1, 0, 1, f"convs_{n}_1")(
        pooled.astype(self.dtype))))
    res.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.features,)))
    y = jnp.concatenate([r.astype(self.dtype) for r in res], axis=-1)
    y = nn.relu(bn("project_1")(conv(1, 0, 1, "project_0")(y)))
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)
