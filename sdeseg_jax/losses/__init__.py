"""Loss functions: photometric/SSIM, smoothness, cross-entropy, berHu.

Import the modules (Google style), e.g.
``from sdeseg_jax.losses import monodepth; monodepth.monodepth_loss(...)``.
Functions are deliberately not re-exported here: ``smoothness`` is both a
module and a function, and a re-export would shadow the module.

Modules: ``photometric`` (ssim, photometric_error), ``smoothness``
(smoothness), ``monodepth`` (monodepth_loss), ``segmentation``
(cross_entropy, pixel_wise_entropy, resize_bilinear_align_corners),
``depth`` (berhu), ``feature`` (feature_distance).
"""
