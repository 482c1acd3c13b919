"""DepthMix / ClassMix / CutMix masks, mixing and strong augmentation."""
