"""x2 upsampling of displacement fields: convex (learned) and linear.

Convex upsampling (RAFT): every fine voxel is a convex combination of the ``3**N`` coarse
neighbours of its parent voxel, with softmax weights predicted by the network; values are
multiplied by 2 (displacements in voxels of the finer grid). Linear upsampling interpolates and
doubles. Both are dimension-generic and TorchScript-compatible.
"""

from __future__ import annotations

import itertools
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UPSAMPLE_MODES", "convex_mask_channels", "ConvexUpsample", "linear_upsample2"]

UPSAMPLE_MODES = ("convex", "linear")


def convex_mask_channels(spatial_dims: int) -> int:
    """Channels of the convex weights: ``3**N`` neighbours x ``2**N`` children."""
    return 3**spatial_dims * 2**spatial_dims


def linear_upsample2(ddf: torch.Tensor) -> torch.Tensor:
    """``(B, N, *S) -> (B, N, *2S)``, (bi/tri)linear (``align_corners=False``), values x2."""
    mode = "trilinear" if ddf.ndim == 5 else "bilinear"
    return 2.0 * F.interpolate(ddf, scale_factor=2.0, mode=mode, align_corners=False)


class ConvexUpsample(nn.Module):
    """Learned convex x2 upsampling of a field.

    Args:
        spatial_dims: 2 or 3.
        mask_scale: the predicted logits are multiplied by this before the softmax (RAFT: 0.25).
    """

    def __init__(self, spatial_dims: int, mask_scale: float = 0.25) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.mask_scale = float(mask_scale)
        self.neighbours: List[List[int]] = [list(p) for p in itertools.product((0, 1, 2), repeat=spatial_dims)]
        self.num_neighbours = 3**spatial_dims
        self.num_children = 2**spatial_dims

    def forward(self, ddf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args:
            ddf: ``(B, N, *S)`` coarse field in voxels of the coarse grid.
            mask: ``(B, 3**N * 2**N, *S)`` weight logits (neighbour-major).

        Returns:
            ``(B, N, *2S)`` field in voxels of the fine grid.
        """
        n = self.spatial_dims
        b = int(ddf.shape[0])
        size: List[int] = [int(s) for s in ddf.shape[2:]]
        nb, ch = self.num_neighbours, self.num_children
        if mask.shape[1] != nb * ch or [int(s) for s in mask.shape[2:]] != size:
            raise ValueError("convex mask of shape " + str(mask.shape) + " does not fit field " + str(ddf.shape) + ".")
        weights = torch.softmax(self.mask_scale * mask.reshape([b, 1, nb, ch] + size), dim=2)
        padded = F.pad(2.0 * ddf, [1, 1] * n)  # zeros outside, as RAFT's unfold
        shifted: List[torch.Tensor] = []
        for p in self.neighbours:
            if n == 3:
                shifted.append(padded[:, :, p[0]:p[0] + size[0], p[1]:p[1] + size[1], p[2]:p[2] + size[2]])
            else:
                shifted.append(padded[:, :, p[0]:p[0] + size[0], p[1]:p[1] + size[1]])
        neigh = torch.stack(shifted, dim=2).unsqueeze(3)  # (B, N, nb, 1, *S)
        up = (weights * neigh).sum(2)  # (B, N, ch, *S); child index = bits along axes 0..N-1
        up = up.reshape([b, n] + [2] * n + size)
        # interleave: (B, N, c0, .., c_{n-1}, s0, .., s_{n-1}) -> (B, N, s0, c0, s1, c1, ...)
        perm: List[int] = [0, 1]
        for k in range(n):
            perm += [2 + n + k, 2 + k]
        return up.permute(perm).reshape([b, n] + [2 * s for s in size])
