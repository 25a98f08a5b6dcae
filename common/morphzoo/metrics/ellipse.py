"""Ellipse fit of a binary mask and the head circumference read-out (HC18's clinical measure)."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = ["Ellipse", "fit_ellipse", "ellipse_circumference", "head_circumference", "contour_offset", "fill_ellipse"]


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


def _largest_filled(m: np.ndarray) -> np.ndarray | None:
    """The largest connected component of ``m > 0`` with its holes filled; None when empty."""
    lab, n = ndimage.label(m > 0)
    if n == 0:
        return None
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))))
    return ndimage.binary_fill_holes(lab == largest)


def _moments_axes(
    mask: np.ndarray | torch.Tensor, spacing: Sequence[float] | None
) -> tuple[np.ndarray, float, float, tuple[float, float], tuple[float, float]] | None:
    """Centre, semi-axes (physical units), major-axis direction and ``(sy, sx)`` of the moments
    ellipse of the largest filled component of ``mask``; None when it is empty."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = np.squeeze(m)
    if m.ndim != 2:
        raise ValueError(f"fit_ellipse expects a 2D mask (H, W), got shape {tuple(np.shape(mask))}.")
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    if spacing is not None and (len(spacing) != 2 or sy <= 0 or sx <= 0):
        raise ValueError(f"spacing must be two positive numbers (row, column), got {spacing}.")
    comp = _largest_filled(m)
    if comp is None:
        return None
    rows, cols = np.nonzero(comp)
    pts = np.stack([cols * sx, rows * sy], axis=1).astype(np.float64)  # physical (x, y)
    centre = pts.mean(axis=0)
    cov = np.cov(pts - centre, rowvar=False, bias=True) + np.diag([sx * sx, sy * sy]) / 12.0  # pixel-area correction
    evals, evecs = np.linalg.eigh(cov)
    a_mm, b_mm = 2.0 * math.sqrt(max(evals[1], 0.0)), 2.0 * math.sqrt(max(evals[0], 0.0))
    return centre, a_mm, b_mm, (evecs[0, 1], evecs[1, 1]), (sy, sx)


def _contour_axes(
    mask: np.ndarray | torch.Tensor, spacing: Sequence[float] | None
) -> tuple[np.ndarray, float, float, tuple[float, float], tuple[float, float]] | None:
    """As :func:`_moments_axes`, by a direct least-squares ellipse fit (Fitzgibbon et al. 1999, in
    the numerically stable form of Halir and Flusser 1998) to the boundary pixels of the largest
    filled component, leaving out those on the image border (where a head leaves the image the
    mask is cut, not its ellipse). None when fewer than 6 points remain or the conic is no ellipse."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = np.squeeze(m)
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    comp = _largest_filled(m)
    if comp is None:
        return None
    edge = comp & ~ndimage.binary_erosion(comp, border_value=1)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = False
    rows, cols = np.nonzero(edge)
    if rows.size < 6:
        return None
    x, y = cols * sx, rows * sy
    x0, y0 = x.mean(), y.mean()
    x, y = x - x0, y - y0
    d1 = np.stack([x * x, x * y, y * y], axis=1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        return None
    mm = s1 + s2 @ t
    mm = np.stack([mm[2] / 2.0, -mm[1], mm[0] / 2.0])
    evals, evecs = np.linalg.eig(mm)
    evecs = np.real(evecs)
    cond = 4 * evecs[0] * evecs[2] - evecs[1] ** 2
    if not np.any(cond > 0):
        return None
    a1 = evecs[:, int(np.argmax(cond > 0))]
    A, B, C = a1
    D, E, F = t @ a1
    den = B * B - 4 * A * C
    if den >= 0:
        return None
    cx, cy = (2 * C * D - B * E) / den, (2 * A * E - B * D) / den
    f0 = A * cx * cx + B * cx * cy + C * cy * cy + D * cx + E * cy + F  # value at the centre
    q = np.array([[A, B / 2.0], [B / 2.0, C]])
    w, v = np.linalg.eigh(q)
    if f0 == 0 or np.any(-f0 / w <= 0):
        return None
    ax = np.sqrt(-f0 / w)  # semi-axes along the eigenvectors of q
    k = int(np.argmax(ax))
    return np.array([cx + x0, cy + y0]), float(ax[k]), float(ax[1 - k]), (float(v[0, k]), float(v[1, k])), (sy, sx)


def fit_ellipse(
    mask: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None, offset: float = 0.0, method: str = "moments"
) -> tuple[Ellipse, float] | None:
    """Fit an ellipse to the largest connected component of a 2D binary mask, by its moments.

    The component's holes are filled; for a filled ellipse the covariance of its pixel
    coordinates is ``R diag(a^2/4, b^2/4) R^T``, so the semi-axes are twice the square roots of
    the covariance eigenvalues (the moments fit used by ``skimage.measure.regionprops``). With
    ``spacing`` the fit is done in physical units (anisotropic pixels allowed).

    ``offset`` moves the ellipse inwards by that many pixels (both semi-axes shortened by
    ``offset * sqrt(sx * sy)``): HC18's masks are the annotators' ellipse outlines filled, so they
    reach half the drawn line's width beyond the ellipse whose circumference the challenge
    reports. :func:`contour_offset` measures it on reference masks (HC18 training split: 1.38 px).

    Args:
        mask: ``(H, W)`` binary mask (non-zero = foreground).
        spacing: pixel size (row, column) in mm; None means 1.
        offset: inward shift of the fitted ellipse, in pixels (0: the mask's own moments ellipse).
        method: ``"moments"`` (above) or ``"contour"``: a direct least-squares fit to the mask's
            boundary pixels off the image border, which keeps a head cut by the image edge whole
            (falls back to the moments when the boundary is no ellipse).

    Returns:
        ``(ellipse in pixels, circumference in the units of spacing)``, or None for an empty mask.

    Raises:
        ValueError: if the mask is not 2D, ``spacing`` is not two positive numbers or ``method``
            is unknown.
    """
    if method not in ("moments", "contour"):
        raise ValueError(f"fit_ellipse: method must be 'moments' or 'contour', got {method!r}.")
    moments = _moments_axes(mask, spacing)
    if moments is None:
        return None
    if method == "contour":
        moments = _contour_axes(mask, spacing) or moments
    centre, a_mm, b_mm, (vx, vy), (sy, sx) = moments
    shift = float(offset) * math.sqrt(sx * sy)
    a_mm, b_mm = max(a_mm - shift, 0.0), max(b_mm - shift, 0.0)
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


def fill_ellipse(mask: np.ndarray | torch.Tensor, spacing: Sequence[float] | None = None, method: str = "moments") -> np.ndarray:
    """The ellipse fitted to a 2D binary mask, filled, as a mask of the same shape (a shape prior).

    The fit is :func:`fit_ellipse`'s (``method`` ``"moments"`` or ``"contour"``), drawn in
    physical coordinates, so anisotropic pixels are handled; the contour fit passes through the
    boundary pixels' centres and is grown by half a pixel to the mask's edge. A mask whose ellipse
    cannot be fitted (empty) is returned empty.

    Args:
        mask: ``(H, W)`` binary mask.
        spacing: pixel size (row, column); None means 1.
        method: the fit.

    Returns:
        ``(H, W)`` uint8 mask (0/1).
    """
    if method not in ("moments", "contour"):
        raise ValueError(f"fill_ellipse: method must be 'moments' or 'contour', got {method!r}.")
    m = np.squeeze(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask))
    fit = _moments_axes(m, spacing)
    if fit is None:
        return np.zeros(m.shape, np.uint8)
    grow = 0.0
    if method == "contour":
        contour = _contour_axes(m, spacing)
        if contour is not None:
            fit, grow = contour, 0.5
    centre, a, b, (vx, vy), (sy, sx) = fit
    g = grow * math.sqrt(sx * sy)
    rows, cols = np.mgrid[: m.shape[0], : m.shape[1]]
    x, y = cols * sx - centre[0], rows * sy - centre[1]
    u, w = x * vx + y * vy, -x * vy + y * vx
    return ((u / (a + g)) ** 2 + (w / (b + g)) ** 2 <= 1.0).astype(np.uint8)


def head_circumference(
    mask: np.ndarray | torch.Tensor, pixel_size_mm: float | Sequence[float] | None = None, offset: float = 0.0, method: str = "moments"
) -> float:
    """Head circumference (mm with ``pixel_size_mm``, else pixels) of the ellipse fitted to ``mask``
    (moved inwards by ``offset`` pixels, see :func:`fit_ellipse`).

    Returns NaN for an empty mask.
    """
    if pixel_size_mm is None:
        spacing = None
    elif isinstance(pixel_size_mm, (int, float)):
        spacing = (float(pixel_size_mm), float(pixel_size_mm))
    else:
        spacing = tuple(float(s) for s in pixel_size_mm)
    fit = fit_ellipse(mask, spacing, offset, method)
    return float("nan") if fit is None else fit[1]


def contour_offset(
    masks: Sequence[np.ndarray | torch.Tensor],
    circumferences: Sequence[float],
    spacings: Sequence[Sequence[float] | None],
    method: str = "moments",
) -> float:
    """The inward shift (pixels) that makes :func:`fit_ellipse` reproduce reference circumferences.

    For each mask, solves ``circumference(a - d s, b - d s) = reference`` for ``d`` (Newton steps
    on the moments ellipse, ``s = sqrt(sx * sy)``) and returns the median over the masks: a
    calibration of how far a task's masks reach beyond the ellipse its reference values measure.
    Use reference (annotation) masks of training images only.

    Args:
        masks: ``(H, W)`` binary reference masks.
        circumferences: the reference circumference of each mask, in the units of its spacing.
        spacings: pixel size (row, column) of each mask; None means 1.
        method: the :func:`fit_ellipse` method the offset is for.

    Returns:
        The median offset in pixels (positive: the masks are larger than the reference ellipses).

    Raises:
        ValueError: if the three sequences differ in length, are empty, or a mask is empty.
    """
    if not (len(masks) == len(circumferences) == len(spacings)) or len(masks) == 0:
        raise ValueError(f"contour_offset needs as many masks, circumferences and spacings (got {len(masks)}, {len(circumferences)}, {len(spacings)}), at least one.")
    offsets = []
    for k, (m, ref, sp) in enumerate(zip(masks, circumferences, spacings)):
        moments = _moments_axes(m, sp)
        if moments is None:
            raise ValueError(f"contour_offset: mask {k} is empty.")
        if method == "contour":
            moments = _contour_axes(m, sp) or moments
        _, a, b, _, (sy, sx) = moments
        s = math.sqrt(sx * sy)
        d, h = 0.0, 1e-4
        for _ in range(6):  # Newton on d; the circumference is smooth and monotone in d
            c = ellipse_circumference(max(a - d * s, 0.0), max(b - d * s, 0.0))
            slope = (ellipse_circumference(max(a - (d + h) * s, 0.0), max(b - (d + h) * s, 0.0)) - c) / h
            d -= (c - float(ref)) / slope
        offsets.append(d)
    return float(np.median(offsets))
