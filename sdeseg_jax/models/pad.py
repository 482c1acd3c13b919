"""PAD-Net attention-guided distillation head (the reference's
``PAD``, ``mtl_pad``).

Two full U-Net decoders (``depth_dec`` with disparities, ``seg_dec``
without) run stages 4, 3, 2 on the shared encoder features. At stage 2 (1/4
resolution) each decoder's feature passes a self-attention block and is added
to the other's: ``merged_seg = seg + SA_depth(depth)``, ``merged_depth =
depth + SA_seg(seg)``. Both then finish stages 1, 0. Segmentation logits
come from 1x1 convs on ``seg_dec`` stage 2 (intermediate, 1/4 resolution) and
stage 0 (final, full resolution).

Parameter groups of the reference (for LR multipliers): depth =
``depth_dec`` + ``sa_seg``; segmentation = ``seg_dec`` + ``sa_depth`` +
``seg_final_head`` + ``seg_intermediate_head``.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sdeseg_jax.models.decoders import UNetDecoder, decoder_kwargs
from sdeseg_jax.models.layers import Conv2d

Dtype = Any


class SelfAttention(nn.Module):
  """``conv(x) * sigmoid(attention(x))``; 3x3 zero-padded bias-free convs.

  The attention conv is zero-initialised, so the gate is exactly 0.5 at
  initialisation.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H, W, features]``."""
    feats = Conv2d(self.features, 3, padding=1, use_bias=False,
                   dtype=self.dtype, name="conv")(x)
    gate = Conv2d(self.features, 3, padding=1, use_bias=False,
                  kernel_init=nn.initializers.zeros, dtype=self.dtype,
                  name="attention")(x)
    return feats * jax.nn.sigmoid(gate)


class PADNet(nn.Module):
  """PAD distillation at decoder stage ``distillation_stage``.

  Attributes:
    decoder: decoder variant name (``decoders.DECODER_VARIANTS``).
    num_classes: segmentation classes.
    distillation_stage: decoder stage of the exchange; the reference's
      ``distillation_layer=7`` is stage 9 - 7 = 2.
    side_output: also return the intermediate segmentation.
  """
  decoder: str = "dec6"
  num_classes: int = 19
  distillation_stage: int = 2
  side_output: bool = True
  dtype: Dtype = jnp.float32
  remat: bool = False  # UNetDecoder.remat of both decoders

  @nn.compact
  def __call__(self, feats: Mapping[str, jax.Array], train: bool = False
               ) -> dict[str, Any]:
    """Runs both decoders with the attention exchange.

    Args:
      feats: encoder features ``{"f0".."f4"}`` of a ``[B, H, W, 3]`` image.
      train: BN batch statistics and ASPP dropout.

    Returns:
      ``{"disp": {0..3: [B, H/2^s, W/2^s, 1] float32}, "upconv": depth
      decoder stage outputs {0..4}, "semantics": [B, H, W, C] float32
      logits, "intermediate_semantics": [B, H/4, W/4, C] float32 logits}``
      (the last only with ``side_output``; it stays at 1/4 resolution).
    """
    kw = decoder_kwargs(self.decoder)
    d = self.distillation_stage
    if not 0 < d < 4:
      raise ValueError(f"distillation_stage must be in 1..3, got {d}")
    first = tuple(range(4, d - 1, -1))
    second = tuple(range(d - 1, -1, -1))
    depth_dec = UNetDecoder(**kw, dtype=self.dtype, remat=self.remat,
                            name="depth_dec")
    seg_dec = UNetDecoder(**kw, enable_disp=False, dtype=self.dtype,
                          remat=self.remat, name="seg_dec")
    ch = kw["num_ch_dec"][d]

    depth_out = depth_dec(feats, train, stages=first)
    seg_out = seg_dec(feats, train, stages=first)
    depth_mid, seg_mid = depth_out["upconv"][d], seg_out["upconv"][d]
    out = {}
    if self.side_output:
      out["intermediate_semantics"] = Conv2d(
          self.num_classes, 1, dtype=self.dtype,
          name="seg_intermediate_head")(seg_mid).astype(jnp.float32)
    sa_depth = SelfAttention(ch, dtype=self.dtype, name="sa_depth")(depth_mid)
    sa_seg = SelfAttention(ch, dtype=self.dtype, name="sa_seg")(seg_mid)
    merged_seg = seg_mid + sa_depth
    merged_depth = depth_mid + sa_seg

    depth_rest = depth_dec(feats, train, x=merged_depth, stages=second)
    seg_rest = seg_dec(feats, train, x=merged_seg, stages=second)
    out["semantics"] = Conv2d(
        self.num_classes, 1, dtype=self.dtype,
        name="seg_final_head")(seg_rest["upconv"][0]).astype(jnp.float32)
    out["disp"] = {**depth_out["disp"], **depth_rest["disp"]}
    out["upconv"] = {**depth_out["upconv"], **depth_rest["upconv"]}
    return out

