"""ASPP + U-Net decoder used for depth and segmentation (the reference's
``DepthDecoder``).

Five stages i = 4, 3, 2, 1, 0. Stage i: ``upconv_i_0`` (ASPP for i == 4, else
a ConvBlock), nearest x2 upsampling only if the tensor is narrower than the
skip ``f{i-1}`` or i == 0, concatenation with ``f{i-1}`` (i > 0),
``upconv_i_1`` (ConvBlock), and for i in ``scales`` a sigmoid disparity from
``dispconv_i`` (reflect-padded 3x3 conv).

A subset of consecutive stages can be run from a given tensor, which PAD-Net
needs (stages 4,3,2 from ``f4``, then 1,0 from a merged tensor).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.aspp import ASPP
from sdeseg_jax.models.layers import Conv2d, ConvBlock, upsample_nearest2x

Dtype = Any

# Named decoder variants of the reference configs plus a tiny
# test-only one.
DECODER_VARIANTS = {
    "dec6": dict(num_ch_dec=(64, 128, 128, 256, 256), aspp_rates=(6, 12, 18),
                 batch_norm=False),
    "dec9": dict(num_ch_dec=(64, 64, 128, 128, 256), aspp_rates=(6, 12, 18),
                 batch_norm=True),
    "dec11": dict(num_ch_dec=(16, 32, 64, 128, 256), aspp_rates=(3, 6, 9),
                  batch_norm=False),
    "dec_tiny": dict(num_ch_dec=(8, 8, 16, 16, 32), aspp_rates=(1, 2, 3),
                     batch_norm=False),
}
# dec5 is dec6 with another name in the reference configs.
DECODER_VARIANTS["dec5"] = DECODER_VARIANTS["dec6"]

ALL_STAGES = (4, 3, 2, 1, 0)


def decoder_kwargs(name: str) -> dict[str, Any]:
  """``UNetDecoder`` keyword arguments of the named variant."""
  if name not in DECODER_VARIANTS:
    raise ValueError(f"unknown decoder variant {name!r}; known: "
                     f"{sorted(DECODER_VARIANTS)}")
  return dict(DECODER_VARIANTS[name])


class UNetDecoder(nn.Module):
  """The reference ``DepthDecoder`` with ``intermediate_aspp=True``.

  Encoder channels are inferred from the features. Disparities are returned
  in float32.

  Attributes:
    num_ch_dec: decoder channels per stage index 0..4.
    aspp_rates: atrous rates of the stage-4 ASPP.
    batch_norm: BatchNorm in the ConvBlocks.
    enable_disp: emit disparities (False for the PAD segmentation decoder,
      which then has no ``dispconv`` parameters).
    scales: stage indices that emit a disparity.
    remat: recompute each block (ASPP, ConvBlock) in the backward pass
      instead of keeping its activations (same function and parameters).
  """
  num_ch_dec: Sequence[int] = (64, 128, 128, 256, 256)
  aspp_rates: Sequence[int] = (6, 12, 18)
  batch_norm: bool = False
  enable_disp: bool = True
  scales: Sequence[int] = (0, 1, 2, 3)
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, feats: Mapping[str, jax.Array], train: bool = False,
               x: jax.Array | None = None,
               stages: Sequence[int] = ALL_STAGES) -> dict[str, dict]:
    """Runs decoder stages.

    Args:
      feats: encoder features ``{"f0".."f4"}`` (``[B, h_k, w_k, c_k]``).
      train: BN batch statistics and ASPP dropout (``"dropout"`` rng).
      x: input of the first stage run; defaults to ``feats["f4"]`` and must
        be given when ``stages`` does not start at 4.
      stages: consecutive descending stage indices to run, e.g. ``(4, 3, 2)``
        or ``(1, 0)``.

    Returns:
      ``{"disp": {s: [B, h, w, 1] float32 in (0, 1)}, "upconv": {i: [B, h,
      w, num_ch_dec[i]]}}`` for the stages run (``disp`` only if
      ``enable_disp``). For dec6 on a 512^2 input at OS16, upconv 4..0 are at
      32, 64, 128, 256, 512.
    """
    if len(self.num_ch_dec) != 5:
      raise ValueError(f"num_ch_dec needs 5 entries, got {self.num_ch_dec}")
    stages = tuple(stages)
    if not stages or any(s not in ALL_STAGES for s in stages) or any(
        a - 1 != b for a, b in zip(stages, stages[1:])):
      raise ValueError(f"stages must be consecutive descending indices from "
                       f"{ALL_STAGES}, got {stages}")
    if x is None:
      if stages[0] != 4:
        raise ValueError(f"stages {stages} do not start at 4: pass x")
      x = feats["f4"]
    out = {"disp": {}, "upconv": {}}
    # ``train`` (argument 2, counting the module) is a Python bool.
    wrap = ((lambda cls: nn.remat(cls, static_argnums=(2,))) if self.remat
            else (lambda cls: cls))
    aspp, conv_block = wrap(ASPP), wrap(ConvBlock)
    for i in stages:
      if i == 4:
        block0 = aspp(tuple(self.aspp_rates), self.num_ch_dec[4],
                      dtype=self.dtype, name="upconv_4_0")
      else:
        block0 = conv_block(self.num_ch_dec[i], self.batch_norm,
                           dtype=self.dtype, name=f"upconv_{i}_0")
      x = block0(x, train)
      if i == 0 or x.shape[2] < feats[f"f{i - 1}"].shape[2]:
        x = upsample_nearest2x(x)
      if i > 0:
        skip = feats[f"f{i - 1}"]
        if skip.shape[1:3] != x.shape[1:3]:
          raise ValueError(f"decoder stage {i}: tensor {x.shape} does not "
                           f"match skip f{i - 1} {skip.shape}")
        x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
      x = conv_block(self.num_ch_dec[i], self.batch_norm, dtype=self.dtype,
                     name=f"upconv_{i}_1")(x, train)
      out["upconv"][i] = x
      if self.enable_disp and i in self.scales:
        disp = Conv2d(1, 3, padding=1, pad_mode="reflect", dtype=self.dtype,
                      name=f"dispconv_{i}")(x)
        out["disp"][i] = jax.nn.sigmoid(disp.astype(jnp.float32))
    return out
