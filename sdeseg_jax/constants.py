"""Constants shared by the data pipeline, the losses, mixing and the configs.

Plain Python values only, so that config files (which import no JAX) and the
numpy data pipeline can import them as well as the compiled step.
"""

# The reference's ignore value for segmentation train ids: every pixel that
# is not one of the evaluated classes (and every unlabeled image) holds it.
IGNORE_INDEX = 250

# Confidence threshold tau of the pseudo-label weight q = #(P' >= tau) / N
# of the mean-teacher consistency loss (the reference's 0.968).
PSEUDO_LABEL_TAU = 0.968
