"""Camera geometry and differentiable inverse warping (pure jnp, NHWC, fp32)."""

from sdeseg_jax.geometry.camera import crop_intrinsics
from sdeseg_jax.geometry.camera import flip_intrinsics
from sdeseg_jax.geometry.camera import intrinsics_matrix
from sdeseg_jax.geometry.camera import invert_intrinsics
from sdeseg_jax.geometry.camera import scale_intrinsics
from sdeseg_jax.geometry.transforms import disp_to_depth
from sdeseg_jax.geometry.transforms import rot_from_axisangle
from sdeseg_jax.geometry.transforms import transformation_from_parameters
from sdeseg_jax.geometry.transforms import translation_matrix
from sdeseg_jax.geometry.warp import backproject
from sdeseg_jax.geometry.warp import bilinear_sample
from sdeseg_jax.geometry.warp import inverse_warp
from sdeseg_jax.geometry.warp import pixel_grid
from sdeseg_jax.geometry.warp import project
from sdeseg_jax.geometry.warp import resize_bilinear_align_corners
from sdeseg_jax.geometry.warp import resize_bilinear_half_pixel
