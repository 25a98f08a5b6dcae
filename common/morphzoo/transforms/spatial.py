"""Resampling between grids: a moving image onto the fixed image's grid, images and fields onto the
network's grid and back (a displacement field resized by a factor s along an axis is multiplied by s)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from morphzoo.transforms.io import ImageRecord

__all__ = ["resample_to_reference", "resize_image", "resize_field"]


def resample_to_reference(moving: ImageRecord, reference: ImageRecord, *, label: bool = False) -> np.ndarray:
    """Resample ``moving`` onto ``reference``'s grid.

    NIfTI: world-coordinate resampling through both affines (MONAI ``SpatialResample``), so pairs
    of different sizes, spacings or orientations land on the fixed grid; outside the moving field
    of view is 0. PNG (no geometry stored): the moving image is resized to the reference size.

    Args:
        moving: image to resample.
        reference: image whose grid is the target.
        label: nearest-neighbour interpolation (label maps) instead of (bi/tri)linear.

    Returns:
        array with ``reference.shape``.
    """
    if moving.spatial_dims != reference.spatial_dims:
        raise ValueError(
            f"{moving.path} is {moving.spatial_dims}D (shape {moving.shape}) but {reference.path} is "
            f"{reference.spatial_dims}D (shape {reference.shape}); cannot register 2D with 3D."
        )
    if moving.shape == reference.shape and np.allclose(moving.affine, reference.affine, atol=1e-5):
        return moving.array
    if moving.kind == "png" or reference.kind == "png":
        t = torch.as_tensor(moving.array, dtype=torch.float32)[None, None]
        return resize_image(t, reference.shape, label=label)[0, 0].numpy()
    img = MetaTensor(torch.as_tensor(moving.array, dtype=torch.float32)[None], affine=torch.as_tensor(moving.affine))
    resampler = SpatialResample(mode="nearest" if label else "bilinear", padding_mode="zeros", align_corners=True)
    out = resampler(img, dst_affine=torch.as_tensor(reference.affine), spatial_size=reference.shape)
    return np.asarray(out[0].detach().cpu().numpy(), dtype=np.float32)


def resize_image(x: torch.Tensor, size: Sequence[int], *, label: bool = False) -> torch.Tensor:
    """Resize a ``(B, C, *S)`` tensor to ``size`` (linear, or nearest for labels); no-op when equal."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if label:
        return F.interpolate(x, size=size, mode="nearest")
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=True)


def resize_field(ddf: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a displacement field ``(B, N, *S)`` (voxel units) to ``size`` and rescale its values.

    With ``align_corners=True`` a voxel index i on a grid of n maps to i (m-1)/(n-1) on a grid of
    m, so component k is multiplied by ``(m_k - 1) / (n_k - 1)``.
    """
    size = tuple(int(s) for s in size)
    src = tuple(ddf.shape[2:])
    if ddf.shape[1] != len(src) or len(size) != len(src):
        raise ValueError(f"ddf of shape {tuple(ddf.shape)} does not match target size {size}.")
    if src == size:
        return ddf
    out = resize_image(ddf, size)
    scale = torch.tensor([(m - 1) / max(n - 1, 1) for m, n in zip(size, src)], dtype=ddf.dtype, device=ddf.device)
    return out * scale.view(1, -1, *([1] * len(size)))
