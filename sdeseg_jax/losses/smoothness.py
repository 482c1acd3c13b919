"""Edge-aware disparity smoothness (monodepth2 ``get_smooth_loss``)."""

from __future__ import annotations

import jax.numpy as jnp


def smoothness(disp, img):
  """Edge-aware first-order smoothness of the mean-normalised disparity.

  ``d = disp / (mean_{H,W}(disp) + 1e-7)`` per sample; then
  ``mean(|dx d| * exp(-mean_c |dx I|)) + mean(|dy d| * exp(-mean_c |dy I|))``
  (monodepth2's ``get_smooth_loss``). Both means run over the whole batch.

  Args:
    disp: ``[B, h, w, 1]`` disparity at its native resolution.
    img: ``[B, h, w, 3]`` image of the same resolution.

  Returns:
    Scalar float32 loss.
  """
  disp = jnp.asarray(disp, jnp.float32)
  img = jnp.asarray(img, jnp.float32)
  if disp.ndim != 4 or disp.shape[-1] != 1:
    raise ValueError(f"disp must be [B, h, w, 1], got {disp.shape}")
  if img.shape[:3] != disp.shape[:3]:
    raise ValueError(
        f"img {img.shape} must match disp {disp.shape} in [B, h, w]")
  mean_disp = jnp.mean(disp, axis=(1, 2), keepdims=True)
  d = disp / (mean_disp + 1e-7)
  grad_d_x = jnp.abs(d[:, :, :-1] - d[:, :, 1:])
  grad_d_y = jnp.abs(d[:, :-1] - d[:, 1:])
  grad_i_x = jnp.mean(
      jnp.abs(img[:, :, :-1] - img[:, :, 1:]), axis=-1, keepdims=True)
  grad_i_y = jnp.mean(
      jnp.abs(img[:, :-1] - img[:, 1:]), axis=-1, keepdims=True)
  return (jnp.mean(grad_d_x * jnp.exp(-grad_i_x))
          + jnp.mean(grad_d_y * jnp.exp(-grad_i_y)))
