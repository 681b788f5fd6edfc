"""jaxseg: loss functions, models and reproducible loss comparisons for prostate and male-pelvis
segmentation, in JAX and Flax."""

__version__ = "0.1.0"
