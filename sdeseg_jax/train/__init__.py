"""Training engine: state, optimiser, jitted step, checkpoints, loop."""
