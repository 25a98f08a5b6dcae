"""Deformation-grid drawing."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from ._arrays import to_numpy


def plot_deformation_grid(
    ax: Axes,
    ddf2d: Any,
    step: int = 8,
    color: Any = "k",
    linewidth: float = 0.6,
    *,
    set_limits: bool = True,
    **line_kwargs: Any,
) -> list[Line2D]:
    """Draw a regular grid deformed by a 2D displacement field.

    Every ``step``-th row and column of the pixel grid (rows/columns ``0, step, 2*step, ...``)
    is drawn as a polyline through the points ``x + ddf(x)``, i.e. where each fixed-grid
    point samples the moving image (MONAI ``Warp`` convention,
    ``warped(x) = moving(x + ddf(x))``). Coordinates are image coordinates as ``imshow`` uses
    them: x = column, y = row, origin at the top-left pixel centre; a zero field draws
    straight lines through the pixel centres.

    Args:
        ax: target axes (may already hold an ``imshow`` of the same size).
        ddf2d: ``(2, H, W)`` displacement in pixels; channel 0 along rows, channel 1 along
            columns. Tensor or array.
        step: grid spacing in pixels (>= 1).
        color: line colour.
        linewidth: line width in points.
        set_limits: set the axes to the image extent (``y`` pointing down, equal aspect), as
            ``imshow`` would.
        **line_kwargs: further :class:`~matplotlib.lines.Line2D` properties.

    Returns:
        The drawn lines: first one per grid row (top to bottom, ``gid="grid_row"``), then one
        per grid column (left to right, ``gid="grid_col"``). Each line's ``xdata`` is the
        column and ``ydata`` the row of the displaced points.
    """
    u = to_numpy(ddf2d).astype(np.float64, copy=False)
    if u.ndim != 3 or u.shape[0] != 2:
        raise ValueError(f"ddf2d must have shape (2, H, W), got {tuple(u.shape)}")
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    h, w = u.shape[1:]
    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    pos_r = rr + u[0]
    pos_c = cc + u[1]
    kw = {"color": color, "linewidth": linewidth, "zorder": 3, **line_kwargs}
    lines: list[Line2D] = []
    for r in range(0, h, step):
        (line,) = ax.plot(pos_c[r, :], pos_r[r, :], gid="grid_row", **kw)
        lines.append(line)
    for c in range(0, w, step):
        (line,) = ax.plot(pos_c[:, c], pos_r[:, c], gid="grid_col", **kw)
        lines.append(line)
    if set_limits:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_aspect("equal")
    return lines
