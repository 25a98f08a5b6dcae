"""A TorchScript-compatible image warp for networks that warp inside ``forward``."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

__all__ = ["warp_image"]


def warp_image(image: torch.Tensor, ddf: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``image(x + ddf(x))`` by (bi/tri)linear interpolation: MONAI ``Warp(mode="bilinear")``'s
    convention and numbers, in a form ``torch.jit.script`` compiles (MONAI's ``Warp`` does not).

    Displacements are in voxels of ``image``'s grid, component ``k`` along array axis ``k``; voxel
    ``i`` of an axis of size ``n`` sits at ``-1 + 2 i / (n - 1)`` (``align_corners=True``), as in
    MONAI's ``Warp``.

    Args:
        image: ``(B, C, H, W[, D])``.
        ddf: ``(B, N, H, W[, D])`` with ``N`` = number of spatial dims, on the same grid.
        padding_mode: ``grid_sample`` padding for points outside the image.

    Returns:
        ``(B, C, H, W[, D])`` warped image.

    Raises:
        ValueError: if the field's shape does not match the image's batch and grid.
    """
    n = image.ndim - 2
    if ddf.ndim != image.ndim or ddf.shape[1] != n or ddf.shape[0] != image.shape[0] or ddf.shape[2:] != image.shape[2:]:
        raise ValueError(
            "expected a (B, " + str(n) + ", *S) field on the image's grid " + str(image.shape) + ", got " + str(ddf.shape)
        )
    size: List[int] = [int(s) for s in image.shape[2:]]
    axes = [torch.arange(s, dtype=ddf.dtype, device=ddf.device) for s in size]
    ref = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=0).unsqueeze(0)  # (1, N, *S)
    pos = ref + ddf
    denom = torch.tensor([float(max(s - 1, 1)) for s in size], dtype=ddf.dtype, device=ddf.device)
    norm = 2.0 * pos / denom.view([1, n] + [1] * n) - 1.0
    grid = norm.movedim(1, -1).flip(-1)  # (B, *S, N) in grid_sample's (x, y[, z]) order
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
