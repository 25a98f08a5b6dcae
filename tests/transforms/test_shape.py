"""FillEllipsed: the ellipse shape prior as a MONAI dict transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from morphzoo.metrics import fill_ellipse
from morphzoo.transforms import FillEllipsed


def _dented_ellipse() -> np.ndarray:
    yy, xx = np.mgrid[:120, :160]
    u = (xx - 80) * math.cos(0.3) + (yy - 60) * math.sin(0.3)
    w = -(xx - 80) * math.sin(0.3) + (yy - 60) * math.cos(0.3)
    m = ((u / 50) ** 2 + (w / 30) ** 2 <= 1).astype(np.uint8)
    m[55:65, 30:45] = 0
    return m


@pytest.mark.parametrize("method", ["moments", "contour"])
def test_same_as_fill_ellipse_and_keeps_type_and_meta(method):
    m = _dented_ellipse()
    x = MetaTensor(torch.as_tensor(m[None]).long(), meta={"filename_or_obj": "head.png"})
    out = FillEllipsed("pred", method)({"pred": x, "other": 1})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "head.png" and out.dtype == torch.long
    assert out.shape == (1, 120, 160)
    assert np.array_equal(out[0].numpy(), fill_ellipse(m, None, method))
    arr = FillEllipsed("pred", method)({"pred": m})["pred"]  # numpy (H, W) stays numpy
    assert isinstance(arr, np.ndarray) and np.array_equal(arr, fill_ellipse(m, None, method))


def test_rejects_volumes_and_unknown_methods():
    with pytest.raises(ValueError, match=r"2D label map.*\(1, 4, 4, 4\)"):
        FillEllipsed("pred")({"pred": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="method"):
        FillEllipsed("pred", "hough")
