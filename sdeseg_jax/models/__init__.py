"""Flax modules: ResNet encoder, ASPP/U-Net decoders, pose net, joint nets."""
