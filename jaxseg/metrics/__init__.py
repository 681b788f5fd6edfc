"""Evaluation metrics. Overlap metrics run in JAX; surface, calibration, detection and statistics
run on the host (NumPy/SciPy). Undefined values are NaN and are counted, never dropped."""

from jaxseg.metrics import calibration, detection, overlap, stats, surface
from jaxseg.metrics.overlap import (confusion_matrix, dice_from_confusion, dice_per_class,
                                    expected_hierarchical_cost, hierarchical_confusion_matrix,
                                    merge_classes, per_slice_dice, precision_from_confusion,
                                    recall_from_confusion)
from jaxseg.metrics.stats import bootstrap_ci, bootstrap_ci_paired
from jaxseg.metrics.surface import hausdorff_distance, hd95_per_case

__all__ = [
    "bootstrap_ci", "bootstrap_ci_paired", "calibration", "confusion_matrix", "detection",
    "dice_from_confusion", "dice_per_class", "expected_hierarchical_cost", "hausdorff_distance",
    "hd95_per_case", "hierarchical_confusion_matrix", "merge_classes", "overlap",
    "per_slice_dice", "precision_from_confusion", "recall_from_confusion", "stats", "surface",
]
