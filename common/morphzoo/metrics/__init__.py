"""Metrics shared by every bundle, baseline and benchmark (see docs: "Shared definitions of metrics").

- :mod:`morphzoo.metrics.jacobian`: Jacobian determinant of ``x + ddf(x)`` and folding statistics.
- :mod:`morphzoo.metrics.similarity`: global NCC, NMI, MSE/RMSE and SSIM between image batches.
- :mod:`morphzoo.metrics.labels`: Dice, IoU, precision/recall, HD/HD95/ASSD of label maps.
- :mod:`morphzoo.metrics.ellipse`: ellipse fit of a mask and head circumference (HC18).
"""

from __future__ import annotations

from .jacobian import (
    folding_count,
    folding_percentage,
    jacobian_determinant,
    jacobian_stats,
    jacobian_std,
    sdlogj,
    sdlogj_learn2reg,
)
from .ellipse import Ellipse, contour_offset, ellipse_circumference, fill_ellipse, fit_ellipse, head_circumference
from .labels import hd95_learn2reg, label_overlap_and_distance, segmentation_scores
from .similarity import mse, ncc_global, nmi, rmse, ssim

__all__ = [
    "jacobian_determinant",
    "folding_count",
    "folding_percentage",
    "jacobian_std",
    "sdlogj",
    "sdlogj_learn2reg",
    "hd95_learn2reg",
    "jacobian_stats",
    "ncc_global",
    "nmi",
    "mse",
    "rmse",
    "ssim",
    "label_overlap_and_distance",
    "segmentation_scores",
    "Ellipse",
    "fit_ellipse",
    "ellipse_circumference",
    "head_circumference",
    "contour_offset",
    "fill_ellipse",
]
