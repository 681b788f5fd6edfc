"""Pure loss functions: ``fn(logits, labels, *, hyperparameters) -> (batch,)`` per-example values.

One module per family; see each function's docstring for its formula and reference, and
``docs/losses.md`` for the table of all of them. ``get(name, **hyperparameters)`` returns a loss by
name (MONAI class names are aliases); ``names()`` lists them.

Every loss computes in at least float32 (bf16 logits give float32 losses), and rejects label maps
that are not class indices (e.g. 1.5 after linear resampling) when the labels are concrete
(``jaxseg.losses._checks``).
"""

from jaxseg.losses.annotation import adaptive_focal_loss, ag_bce_loss, hard_region_mask
from jaxseg.losses.boundary import boundary_loss, dice_boundary_loss, kervadec_schedule
from jaxseg.losses.compound import dice_ce_loss, dice_focal_loss
from jaxseg.losses.cross_entropy import (pixelwise_softmax_cross_entropy,
                                         sigmoid_binary_cross_entropy, softmax_cross_entropy)
from jaxseg.losses.focal import sigmoid_focal_loss, softmax_focal_loss
from jaxseg.losses.hierarchical import (expected_cost, expected_cost_cross_entropy,
                                        hierarchical_cross_entropy)
from jaxseg.losses.lovasz import lovasz_hinge_loss, lovasz_softmax_loss
from jaxseg.losses.region import (focal_tversky_loss, generalized_dice_loss, soft_dice_loss,
                                  tversky_loss)
from jaxseg.losses.registry import aliases, get, names, register
from jaxseg.losses.supervision import (deep_supervision_loss, downsample_labels, elbo_loss,
                                       kl_diagonal_gaussians, nnunet_weights)
from jaxseg.losses.topology import dice_cldice_loss, soft_cldice_loss, soft_skeleton

__all__ = [
    "adaptive_focal_loss", "ag_bce_loss", "aliases", "boundary_loss", "deep_supervision_loss",
    "dice_boundary_loss", "dice_ce_loss", "dice_cldice_loss", "dice_focal_loss",
    "downsample_labels", "elbo_loss", "expected_cost", "expected_cost_cross_entropy",
    "focal_tversky_loss", "generalized_dice_loss", "get", "hard_region_mask",
    "hierarchical_cross_entropy", "kervadec_schedule", "kl_diagonal_gaussians",
    "lovasz_hinge_loss", "lovasz_softmax_loss", "names", "nnunet_weights",
    "pixelwise_softmax_cross_entropy", "register", "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss", "soft_cldice_loss", "soft_dice_loss", "soft_skeleton",
    "softmax_cross_entropy", "softmax_focal_loss", "tversky_loss",
]
