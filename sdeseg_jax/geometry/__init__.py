"""Camera geometry and differentiable inverse warping (pure jnp, NHWC, fp32)."""
