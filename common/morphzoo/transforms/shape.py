"""Shape priors as MONAI transforms: a binary 2D mask replaced by its fitted ellipse."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from morphzoo.metrics.ellipse import fill_ellipse

__all__ = ["FillEllipsed"]


class FillEllipsed(MapTransform):
    """Replace each 2D binary label map by the ellipse fitted to it, filled
    (:func:`morphzoo.metrics.fill_ellipse`): what ``fetal_us_seg``'s ``ellipse_mask`` does, as a
    post-processing transform for MONAI Label's bundle task.

    Args:
        keys: label maps ``(1, H, W)`` or ``(H, W)``, values 0/1.
        method: ``"moments"`` or ``"contour"``.
        allow_missing_keys: as MONAI's.

    Raises:
        ValueError: for a map that is not 2D with one channel.
    """

    def __init__(self, keys: KeysCollection, method: str = "moments", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if method not in ("moments", "contour"):
            raise ValueError(f"FillEllipsed: method must be 'moments' or 'contour', got {method!r}.")
        self.method = method

    def __call__(self, data: Mapping[Hashable, torch.Tensor | np.ndarray]) -> dict[Hashable, torch.Tensor | np.ndarray]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            shape: Sequence[int] = tuple(x.shape)
            if len(shape) == 3 and shape[0] == 1:
                plane = x[0]
            elif len(shape) == 2:
                plane = x
            else:
                raise ValueError(f"FillEllipsed: {key!r} must be a 2D label map (1, H, W) or (H, W), got shape {shape}.")
            arr = plane.detach().cpu().numpy() if isinstance(plane, torch.Tensor) else np.asarray(plane)
            filled = fill_ellipse(arr > 0, None, self.method).reshape(shape)
            d[key] = convert_to_dst_type(filled.astype(arr.dtype if arr.dtype != bool else np.uint8), x)[0]
        return d
