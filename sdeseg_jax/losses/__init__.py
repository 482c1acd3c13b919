"""Loss functions: photometric/SSIM, smoothness, cross-entropy, berHu."""
