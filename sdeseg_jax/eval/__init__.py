"""Evaluators: segmentation (mIoU) and depth metrics."""
