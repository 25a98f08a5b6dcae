"""Ellipse fit of a binary mask and the head circumference read-out (HC18's clinical measure)."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Ellipse", "fit_ellipse", "ellipse_circumference", "head_circumference"]


class Ellipse(NamedTuple):
    """An ellipse in pixel coordinates of a 2D array (``skimage.measure.EllipseModel`` convention).

    ``cx``: centre column, ``cy``: centre row, ``a``/``b``: semi-axes in pixels (``a >= b``),
    ``angle``: radians from the column axis towards the row axis, of the ``a`` axis.
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float


def ellipse_circumference(a: float, b: float) -> float:
    """Perimeter of an ellipse with semi-axes ``a`` and ``b`` (Ramanujan's second approximation).

    Exact for a circle (``2 pi r``); relative error below 1e-9 for axis ratios found in HC18.
    """
    if a < 0 or b < 0:
        raise ValueError(f"semi-axes must be non-negative, got a={a}, b={b}.")
    if a + b == 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def fit_ellipse(mask: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None) -> tuple[Ellipse, float] | None:
    """Fit an ellipse to the largest connected component of a 2D binary mask, by its moments.

    The component's holes are filled; for a filled ellipse the covariance of its pixel
    coordinates is ``R diag(a^2/4, b^2/4) R^T``, so the semi-axes are twice the square roots of
    the covariance eigenvalues (the moments fit used by ``skimage.measure.regionprops``). With
    ``spacing`` the fit is done in physical units (anisotropic pixels allowed).

    Args:
        mask: ``(H, W)`` binary mask (non-zero = foreground).
        spacing: pixel size (row, column) in mm; None means 1.

    Returns:
        ``(ellipse in pixels, circumference in the units of spacing)``, or None for an empty mask.

    Raises:
        ValueError: if the mask is not 2D or ``spacing`` is not two positive numbers.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = np.squeeze(m)
    if m.ndim != 2:
        raise ValueError(f"fit_ellipse expects a 2D mask (H, W), got shape {tuple(np.shape(mask))}.")
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    if spacing is not None and (len(spacing) != 2 or sy <= 0 or sx <= 0):
        raise ValueError(f"spacing must be two positive numbers (row, column), got {spacing}.")
    lab, n = ndimage.label(m > 0)
    if n == 0:
        return None
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))))
    comp = ndimage.binary_fill_holes(lab == largest)
    rows, cols = np.nonzero(comp)
    pts = np.stack([cols * sx, rows * sy], axis=1).astype(np.float64)  # physical (x, y)
    centre = pts.mean(axis=0)
    cov = np.cov(pts - centre, rowvar=False, bias=True) + np.diag([sx * sx, sy * sy]) / 12.0  # pixel-area correction
    evals, evecs = np.linalg.eigh(cov)
    a_mm, b_mm = 2.0 * math.sqrt(max(evals[1], 0.0)), 2.0 * math.sqrt(max(evals[0], 0.0))
    vx, vy = evecs[0, 1], evecs[1, 1]
    circumference = ellipse_circumference(a_mm, b_mm)
    # back to pixels: the axes stay axes only for isotropic pixels; report pixel semi-axes along them
    angle_mm = math.atan2(vy, vx)
    ca, sa = math.cos(angle_mm), math.sin(angle_mm)
    a_px = a_mm * math.hypot(ca / sx, sa / sy)
    b_px = b_mm * math.hypot(-sa / sx, ca / sy)
    angle_px = math.atan2(sa / sy, ca / sx)
    if angle_px > math.pi / 2:  # an axis has no direction: keep the angle in (-pi/2, pi/2]
        angle_px -= math.pi
    elif angle_px <= -math.pi / 2:
        angle_px += math.pi
    return Ellipse(centre[0] / sx, centre[1] / sy, a_px, b_px, angle_px), circumference


def head_circumference(mask: np.ndarray | torch.Tensor, pixel_size_mm: float | Sequence[float] | None = None) -> float:
    """Head circumference (mm with ``pixel_size_mm``, else pixels) of the ellipse fitted to ``mask``.

    Returns NaN for an empty mask.
    """
    if pixel_size_mm is None:
        spacing = None
    elif isinstance(pixel_size_mm, (int, float)):
        spacing = (float(pixel_size_mm), float(pixel_size_mm))
    else:
        spacing = tuple(float(s) for s in pixel_size_mm)
    fit = fit_ellipse(mask, spacing)
    return float("nan") if fit is None else fit[1]
