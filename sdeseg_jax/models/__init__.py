"""Flax modules: ResNet encoder, ASPP/U-Net decoders, pose net, joint nets.

``joint.from_config(config.model)`` builds the network of a config;
``pretrained`` imports PyTorch weights.
"""

from sdeseg_jax.models.decoders import DECODER_VARIANTS, UNetDecoder
from sdeseg_jax.models.joint import (JointSegDepthDec, SDENet, SegDepthNet,
                                     from_config)
from sdeseg_jax.models.pad import PADNet
from sdeseg_jax.models.pose import PoseNet
from sdeseg_jax.models.resnet import ResNetEncoder

__all__ = [
    "DECODER_VARIANTS", "JointSegDepthDec", "PADNet", "PoseNet",
    "ResNetEncoder", "SDENet", "SegDepthNet", "UNetDecoder", "from_config",
]
