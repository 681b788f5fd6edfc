"""Evaluation metrics. Overlap metrics run in JAX; surface, calibration, detection and statistics
run on the host (NumPy/SciPy). Undefined values are NaN and are counted, never dropped.

Conventions of other libraries are explicit switches: ``overlap``'s ``empty=`` policies (jaxseg /
nnU-Net, MONAI ``ignore_empty``; ``LIBRARY_EMPTY_POLICIES``) and ``surface``'s ``surface=``
definitions (``"jaxseg"``, ``"monai"``, ``"surface_distance"``)."""

from jaxseg.metrics import calibration, detection, overlap, stats, surface
from jaxseg.metrics.overlap import (LIBRARY_EMPTY_POLICIES, confusion_matrix, dice_from_confusion,
                                    dice_per_class, empty_policy, expected_hierarchical_cost,
                                    hierarchical_confusion_matrix, merge_classes, per_slice_dice,
                                    precision_from_confusion, recall_from_confusion)
from jaxseg.metrics.stats import bootstrap_ci, bootstrap_ci_paired
from jaxseg.metrics.surface import (average_surface_distance, hausdorff_distance, hd95_per_case,
                                    normalized_surface_dice, normalized_surface_dice_per_case)

__all__ = [
    "LIBRARY_EMPTY_POLICIES", "average_surface_distance", "bootstrap_ci", "bootstrap_ci_paired",
    "calibration", "confusion_matrix", "detection", "dice_from_confusion", "dice_per_class",
    "empty_policy", "expected_hierarchical_cost", "hausdorff_distance", "hd95_per_case",
    "hierarchical_confusion_matrix", "merge_classes", "normalized_surface_dice",
    "normalized_surface_dice_per_case", "overlap", "per_slice_dice", "precision_from_confusion",
    "recall_from_confusion", "stats", "surface",
]
