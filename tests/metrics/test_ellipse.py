"""Ellipse fit and head circumference: analytic ellipses, a circle, anisotropic pixels, real HC18 masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from morphzoo.metrics import ellipse_circumference, fit_ellipse, head_circumference
from tests.conftest import REPO


def _ellipse_mask(h, w, cx, cy, a, b, angle, sx=1.0, sy=1.0):
    yy, xx = np.mgrid[:h, :w]
    x, y = (xx - cx) * sx, (yy - cy) * sy
    xr = x * math.cos(angle) + y * math.sin(angle)
    yr = -x * math.sin(angle) + y * math.cos(angle)
    return ((xr / a) ** 2 + (yr / b) ** 2 <= 1).astype(np.uint8)


def test_circumference_of_circle_and_degenerate():
    assert ellipse_circumference(10, 10) == pytest.approx(2 * math.pi * 10, rel=1e-12)
    assert ellipse_circumference(5, 0) == pytest.approx(20.0, rel=1e-3)  # flat ellipse: 4a
    with pytest.raises(ValueError):
        ellipse_circumference(-1, 2)


@pytest.mark.parametrize("angle", [0.0, 0.4, -1.1, math.pi / 2])
def test_fit_recovers_analytic_ellipse(angle):
    cx, cy, a, b = 400.3, 270.7, 200.0, 120.0
    mask = _ellipse_mask(540, 800, cx, cy, a, b, angle)
    ell, circ = fit_ellipse(mask)
    assert ell.cx == pytest.approx(cx, abs=0.1) and ell.cy == pytest.approx(cy, abs=0.1)
    assert ell.a == pytest.approx(a, rel=2e-3) and ell.b == pytest.approx(b, rel=2e-3)
    d = (ell.angle - angle + math.pi / 2) % math.pi - math.pi / 2  # axes have no direction
    assert abs(d) < 2e-3
    assert circ == pytest.approx(ellipse_circumference(a, b), rel=2e-3)


def test_fit_in_physical_units_with_anisotropic_pixels():
    # an ellipse of semi-axes 30 x 20 mm drawn on 0.2 x 0.1 mm pixels (rows x columns)
    mask = _ellipse_mask(400, 700, 350, 200, 30.0, 20.0, 0.3, sx=0.1, sy=0.2)
    _, circ = fit_ellipse(mask, spacing=(0.2, 0.1))
    assert circ == pytest.approx(ellipse_circumference(30, 20), rel=5e-3)
    assert head_circumference(mask, (0.2, 0.1)) == pytest.approx(circ)


def test_largest_component_with_hole_and_empty_mask():
    mask = _ellipse_mask(200, 200, 100, 100, 60, 40, 0.0)
    mask[95:105, 95:105] = 0  # a hole is filled
    mask[:5, :5] = 1  # a speck is ignored
    _, circ = fit_ellipse(mask)
    assert circ == pytest.approx(ellipse_circumference(60, 40), rel=3e-3)
    assert fit_ellipse(np.zeros((10, 10))) is None
    assert math.isnan(head_circumference(np.zeros((10, 10)), 0.1))
    with pytest.raises(ValueError, match="2D"):
        fit_ellipse(np.zeros((3, 4, 5)))


def test_reference_masks_reproduce_hc18_circumference(data_dir):
    from morphzoo.data.hc18 import load_hc18_mask

    items = json.loads((REPO / "datalists" / "hc18_seg.json").read_text())["test"][:10]
    errors = [
        abs(head_circumference(load_hc18_mask(data_dir / it["label"]), it["pixel_size_mm"]) - it["hc_mm"]) for it in items
    ]
    # the CSV value comes from the annotators' ellipse; the filled mask through our fit agrees within 2 mm
    assert max(errors) < 2.0, errors
