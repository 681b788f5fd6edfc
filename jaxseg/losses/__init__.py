"""Pure loss functions: ``fn(logits, labels, *, hyperparameters) -> (batch,)`` per-example values.

One module per family; see each function's docstring for its formula and reference.
"""

from jaxseg.losses.annotation import adaptive_focal_loss, ag_bce_loss, hard_region_mask
from jaxseg.losses.boundary import boundary_loss, dice_boundary_loss, kervadec_schedule
from jaxseg.losses.cross_entropy import (pixelwise_softmax_cross_entropy,
                                         sigmoid_binary_cross_entropy, softmax_cross_entropy)
from jaxseg.losses.focal import sigmoid_focal_loss, softmax_focal_loss
from jaxseg.losses.hierarchical import (expected_cost, expected_cost_cross_entropy,
                                        hierarchical_cross_entropy)
from jaxseg.losses.region import soft_dice_loss, tversky_loss
from jaxseg.losses.supervision import (deep_supervision_loss, downsample_labels, elbo_loss,
                                       kl_diagonal_gaussians, nnunet_weights)

__all__ = [
    "adaptive_focal_loss", "ag_bce_loss", "boundary_loss", "deep_supervision_loss",
    "dice_boundary_loss", "downsample_labels", "elbo_loss", "expected_cost",
    "expected_cost_cross_entropy", "hard_region_mask", "hierarchical_cross_entropy",
    "kervadec_schedule", "kl_diagonal_gaussians", "nnunet_weights",
    "pixelwise_softmax_cross_entropy", "sigmoid_binary_cross_entropy", "sigmoid_focal_loss",
    "soft_dice_loss", "softmax_cross_entropy", "softmax_focal_loss", "tversky_loss",
]
