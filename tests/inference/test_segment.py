"""calibrate_hc_offset: the HC offset of a network's own masks, on analytic ellipses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from morphzoo.inference import calibrate_hc_offset
from morphzoo.metrics.ellipse import ellipse_circumference


class EllipseSegmenter:
    """Stands in for a Segmenter: 'segments' item k as a filled ellipse grown by ``grow`` pixels."""

    hc_fit = "contour"

    def __init__(self, axes, grow):
        self.axes, self.grow = axes, grow

    def segment(self, path, spacing=None):
        a, b, theta = self.axes[int(Path(path).name)]
        rows, cols = np.mgrid[:200, :260]
        x, y = cols - 131.3, rows - 97.6
        u, w = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
        inside = (u / (a + self.grow)) ** 2 + (w / (b + self.grow)) ** 2 <= 1.0
        return {"prob": inside.astype(np.float32) * 0.9 + 0.05, "mask": inside.astype(np.uint8)}, None


AXES = [(80.0, 60.0, 0.3), (70.0, 55.0, -0.9), (90.0, 72.0, 1.4), (64.0, 50.0, 0.0), (85.0, 58.0, 2.2)]


def _items(px):
    return [{"image": str(k), "hc_mm": ellipse_circumference(a * px, b * px), "pixel_size_mm": px} for k, (a, b, _) in enumerate(AXES)]


@pytest.mark.parametrize("px", [0.1, 0.25])
def test_offset_follows_how_far_the_masks_reach(px):
    """Masks 2.5 px larger than the reference ellipses need an offset 2.5 px larger; the offset is
    in pixels whatever the pixel size."""
    base = calibrate_hc_offset(EllipseSegmenter(AXES, 0.0), _items(px), progress=False)
    grown = calibrate_hc_offset(EllipseSegmenter(AXES, 2.5), _items(px), progress=False)
    assert abs(base) < 0.6  # only the boundary pixels' discretisation
    assert grown - base == pytest.approx(2.5, abs=0.1)


def test_needs_reference_circumference_and_pixel_size():
    items = _items(0.1)
    del items[2]["hc_mm"]
    with pytest.raises(ValueError, match="2: calibrate_hc_offset needs hc_mm"):
        calibrate_hc_offset(EllipseSegmenter(AXES, 0.0), items, progress=False)
