"""Figures for MorphZoo: deformation grids, Jacobian maps, overlays, training curves (PNG).

All figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no
``pyplot``) and written atomically by :func:`save_figure`.
"""

from __future__ import annotations

from .grid import plot_deformation_grid
from .io import new_figure, save_figure
from .jacobian import add_colorbar, jacobian_determinant_field, plot_jacobian_map
from .panels import (
    boxplot_by_method,
    boxplot_figure,
    chain_training_logs,
    metric_comparison_figure,
    overlay_figure,
    overlay_mask,
    plot_metric_comparison,
    plot_training_curves,
    registration_figure,
    registration_panel,
    training_curves_figure,
)

__all__ = [
    "add_colorbar",
    "boxplot_by_method",
    "boxplot_figure",
    "chain_training_logs",
    "jacobian_determinant_field",
    "metric_comparison_figure",
    "new_figure",
    "overlay_figure",
    "overlay_mask",
    "plot_deformation_grid",
    "plot_jacobian_map",
    "plot_metric_comparison",
    "plot_training_curves",
    "registration_figure",
    "registration_panel",
    "save_figure",
    "training_curves_figure",
]
