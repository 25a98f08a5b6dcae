"""Deformation grid lines (morphzoo.viz.grid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphzoo.viz import new_figure, plot_deformation_grid

H, W, STEP = 20, 30, 8


def _ax():
    return new_figure((3, 2)).add_subplot()


def _split(lines):
    rows = [ln for ln in lines if ln.get_gid() == "grid_row"]
    cols = [ln for ln in lines if ln.get_gid() == "grid_col"]
    return rows, cols


def test_zero_field_draws_straight_lines_at_grid_positions() -> None:
    ax = _ax()
    lines = plot_deformation_grid(ax, np.zeros((2, H, W)), step=STEP)
    assert list(ax.lines) == lines
    rows, cols = _split(lines)
    assert len(rows) == len(range(0, H, STEP)) == 3 and len(cols) == len(range(0, W, STEP)) == 4
    for r, ln in zip(range(0, H, STEP), rows):
        np.testing.assert_array_equal(ln.get_ydata(), np.full(W, r))
        np.testing.assert_array_equal(ln.get_xdata(), np.arange(W))
    for c, ln in zip(range(0, W, STEP), cols):
        np.testing.assert_array_equal(ln.get_xdata(), np.full(H, c))
        np.testing.assert_array_equal(ln.get_ydata(), np.arange(H))
    assert ax.get_xlim() == (-0.5, W - 0.5) and ax.get_ylim() == (H - 0.5, -0.5)  # imshow extent, y down


def test_constant_shift_moves_lines_by_the_shift() -> None:
    ddf = torch.zeros(2, H, W)
    ddf[0] = 3.0  # rows
    ddf[1] = -2.5  # columns
    rows, cols = _split(plot_deformation_grid(_ax(), ddf, step=STEP, color="r", linewidth=1.0))
    for r, ln in zip(range(0, H, STEP), rows):
        np.testing.assert_allclose(ln.get_ydata(), r + 3.0)
        np.testing.assert_allclose(ln.get_xdata(), np.arange(W) - 2.5)
    for c, ln in zip(range(0, W, STEP), cols):
        np.testing.assert_allclose(ln.get_xdata(), c - 2.5)
        np.testing.assert_allclose(ln.get_ydata(), np.arange(H) + 3.0)
    assert rows[0].get_color() == "r" and rows[0].get_linewidth() == 1.0


def test_local_displacement_moves_only_that_point() -> None:
    ddf = np.zeros((2, H, W))
    ddf[:, 8, 16] = (4.0, 1.0)  # (row, col) displacement of pixel (8, 16)
    rows, cols = _split(plot_deformation_grid(_ax(), ddf, step=STEP))
    y, x = rows[1].get_ydata(), rows[1].get_xdata()  # grid row 8
    assert (y[16], x[16]) == (12.0, 17.0)
    assert np.count_nonzero(y != 8) == 1 and np.count_nonzero(x != np.arange(W)) == 1
    for c, ln in zip(range(0, W, STEP), cols):
        x, y = ln.get_xdata().copy(), ln.get_ydata().copy()
        if c == 16:  # grid column 16 bends at row 8 only
            assert (y[8], x[8]) == (12.0, 17.0)
            x[8], y[8] = 16.0, 8.0
        np.testing.assert_array_equal(x, np.full(H, c))
        np.testing.assert_array_equal(y, np.arange(H))


@pytest.mark.parametrize("bad", [np.zeros((3, 4, 4)), np.zeros((2, 4)), np.zeros((2, 4, 4, 4))])
def test_rejects_non_2d_fields(bad) -> None:
    with pytest.raises(ValueError):
        plot_deformation_grid(_ax(), bad)


def test_rejects_bad_step() -> None:
    with pytest.raises(ValueError):
        plot_deformation_grid(_ax(), np.zeros((2, 4, 4)), step=0)
