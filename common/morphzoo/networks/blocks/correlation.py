"""Feature correlation for iterative registration: all-pairs pyramids and on-the-fly local search.

SearchMorph (and RAFT before it) compares every fixed-image feature vector with moving-image
feature vectors around the position the current field points to. The correlation of positions
``x`` (fixed) and ``y`` (moving) is ``C(x, y) = <h_F(x), h_M(y)> / sqrt(D)`` for ``D`` feature
channels. The pyramid average-pools ``C`` over the moving positions ``y`` (kernels 1, 2, 4, 8) and
the search module reads, at every level ``l``, the ``K`` values at
``(x + ddf(x)) / 2**l + delta`` for each integer offset ``delta`` with ``|delta|_1 <= r`` (a diamond
in 2D, an octahedron in 3D), by (bi/tri)linear interpolation with zeros outside the volume.

Two paths give the same search map:

- ``"all_pairs"`` builds the ``(H W [D])^2`` volume once per pair and samples it (the paper;
  quadratic memory: 236 MB for 160x192 at half resolution, impossible for 3D volumes);
- ``"local"`` never builds it. Correlation is linear in ``h_M`` and so are average pooling and
  linear interpolation, hence ``pool_l(C)(x, p) = <h_F(x), pool_l(h_M)(p)> / sqrt(D)`` at any
  sampled point ``p``: pooling and sampling the *features* and taking the dot product afterwards
  computes exactly the ``K`` numbers the search needs, in memory linear in the image size.

Positions and displacements are in voxels of the feature grid, channel order = array-axis order
(MONAI ``Warp`` convention), unlike RAFT's ``(x, y)`` order. A level-``l`` cell ``j`` holds the
average of fine positions ``2**l j .. 2**l (j + 1) - 1`` and a fine position ``p`` maps to
``p / 2**l`` (RAFT's convention, kept so that the radius means the same thing at every level).
"""

from __future__ import annotations

import itertools
import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CORRELATION_MODES", "diamond_offsets", "voxel_to_grid", "CorrelationSearch"]

CORRELATION_MODES = ("local", "all_pairs")


def diamond_offsets(radius: int, spatial_dims: int) -> torch.Tensor:
    """Integer offsets with L1 norm at most ``radius``, lexicographic order.

    Args:
        radius: search radius ``r >= 0``.
        spatial_dims: 2 (diamond: ``2r^2 + 2r + 1`` points) or 3 (octahedron).

    Returns:
        ``(K, spatial_dims)`` float tensor of offsets in array-axis order.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    rng = range(-radius, radius + 1)
    pts = [p for p in itertools.product(rng, repeat=spatial_dims) if sum(abs(v) for v in p) <= radius]
    return torch.tensor(pts, dtype=torch.float32)


def voxel_to_grid(pos: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Voxel positions (array-axis order) -> ``grid_sample`` coordinates (``align_corners=False``).

    Args:
        pos: ``(..., N)`` positions in voxels, component ``k`` along array axis ``k``.
        size: the ``N`` sizes of the sampled grid.

    Returns:
        ``(..., N)`` coordinates in ``[-1, 1]`` at voxel centres, reversed to ``grid_sample``'s
        ``(x, y[, z])`` = (last axis first) order.
    """
    n = len(size)
    scale = torch.tensor([float(s) for s in size], dtype=pos.dtype, device=pos.device)
    norm = (2.0 * pos + 1.0) / scale - 1.0
    return norm.flip(-1) if n > 1 else norm


def _avg_pool2(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    if spatial_dims == 3:
        return F.avg_pool3d(x, kernel_size=2, stride=2)
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class CorrelationSearch(nn.Module):
    """Correlation pyramid + diamond search, all-pairs or local (on the fly).

    Use :meth:`pyramid` once per pair, then :meth:`lookup` at every iteration with the current
    field. Both modes return the same search map (to float round-off).

    Args:
        spatial_dims: 2 or 3.
        radius: L1 search radius ``r`` (paper: 3 for MRI, 2 for echocardiography).
        num_levels: pyramid levels (paper: 4, kernels 1, 2, 4, 8); 1 = no pyramid.
        mode: ``"local"`` (default; linear memory) or ``"all_pairs"`` (the paper's volume).

    Example::

        search = CorrelationSearch(2, radius=2)
        pyr = search.pyramid(h_fixed, h_moving)            # (B, D, H, W) each
        smap = search.lookup(pyr, h_fixed, ddf)            # (B, 4 * 13, H, W)
    """

    def __init__(self, spatial_dims: int, radius: int, num_levels: int = 4, mode: str = "local") -> None:
        super().__init__()
        if mode not in CORRELATION_MODES:
            raise ValueError(f"mode must be one of {CORRELATION_MODES}, got {mode!r}.")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}.")
        self.spatial_dims = spatial_dims
        self.radius = int(radius)
        self.num_levels = int(num_levels)
        self.mode = mode
        self.all_pairs = mode == "all_pairs"
        self.register_buffer("offsets", diamond_offsets(self.radius, spatial_dims), persistent=False)
        self.num_offsets = int(self.offsets.shape[0])

    @property
    def out_channels(self) -> int:
        """Channels of the search map: ``num_levels * K``."""
        return self.num_levels * self.num_offsets

    def _check(self, h_fixed: torch.Tensor, h_moving: torch.Tensor) -> None:
        if h_fixed.ndim != self.spatial_dims + 2 or h_fixed.shape != h_moving.shape:
            raise ValueError(
                "expected fixed and moving features of the same shape (B, D, *spatial) with "
                + str(self.spatial_dims) + " spatial dims, got " + str(h_fixed.shape) + " and " + str(h_moving.shape)
            )

    def pyramid(self, h_fixed: torch.Tensor, h_moving: torch.Tensor) -> List[torch.Tensor]:
        """Per-pair part of the search.

        Args:
            h_fixed: ``(B, D, *S)`` fixed-image features.
            h_moving: ``(B, D, *S)`` moving-image features.

        Returns:
            ``"local"``: the moving features pooled to each level, ``(B, D, *S_l)``;
            ``"all_pairs"``: the correlation volume pooled over the moving positions,
            ``(B * prod(S), 1, *S_l)`` per level.
        """
        self._check(h_fixed, h_moving)
        levels: List[torch.Tensor] = []
        if self.all_pairs:
            b, d = int(h_fixed.shape[0]), int(h_fixed.shape[1])
            size: List[int] = [int(s) for s in h_fixed.shape[2:]]
            n = 1
            for s in size:
                n *= s
            corr = torch.einsum("bdx,bdy->bxy", h_fixed.reshape(b, d, n), h_moving.reshape(b, d, n))
            cur = corr.div_(math.sqrt(float(d))).reshape([b * n, 1] + size)  # in place: one volume, not two
        else:
            cur = h_moving
        levels.append(cur)
        for _ in range(1, self.num_levels):
            cur = _avg_pool2(cur, self.spatial_dims)
            levels.append(cur)
        return levels

    def lookup(self, pyramid: List[torch.Tensor], h_fixed: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """Search map at the positions the field points to.

        Args:
            pyramid: output of :meth:`pyramid`.
            h_fixed: ``(B, D, *S)`` fixed-image features (used by the local path).
            ddf: ``(B, N, *S)`` current displacement in voxels of the feature grid.

        Returns:
            ``(B, num_levels * K, *S)`` search map, level-major (level 0 offsets first).
        """
        b, d = int(h_fixed.shape[0]), int(h_fixed.shape[1])
        size: List[int] = [int(s) for s in h_fixed.shape[2:]]
        if ddf.shape[0] != b or ddf.shape[1] != self.spatial_dims or [int(s) for s in ddf.shape[2:]] != size:
            raise ValueError("ddf of shape " + str(ddf.shape) + " does not match features " + str(h_fixed.shape) + ".")
        n = 1
        for s in size:
            n *= s
        axes = [torch.arange(s, dtype=ddf.dtype, device=ddf.device) for s in size]
        grid = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=0)  # (N, *S)
        pos = (grid.unsqueeze(0) + ddf).reshape(b, self.spatial_dims, n).transpose(1, 2)  # (B, n, N)
        offsets = self.offsets.to(ddf.dtype)
        extra: List[int] = [1] * (self.spatial_dims - 1)
        out: List[torch.Tensor] = []
        for lvl in range(self.num_levels):
            level = pyramid[lvl]
            lsize: List[int] = [int(s) for s in level.shape[2:]]
            pts = pos.unsqueeze(2) / float(2**lvl) + offsets.view(1, 1, -1, self.spatial_dims)  # (B, n, K, N)
            coords = voxel_to_grid(pts, lsize)
            if self.all_pairs:
                g = coords.reshape([b * n, self.num_offsets] + extra + [self.spatial_dims])
                vals = F.grid_sample(level, g, mode="bilinear", padding_mode="zeros", align_corners=False)
                vals = vals.reshape(b, n, self.num_offsets)
            else:
                g = coords.reshape([b, n, self.num_offsets] + [1] * (self.spatial_dims - 2) + [self.spatial_dims])
                feats = F.grid_sample(level, g, mode="bilinear", padding_mode="zeros", align_corners=False)
                feats = feats.reshape(b, d, n, self.num_offsets)
                vals = (feats * h_fixed.reshape(b, d, n, 1)).sum(1) / math.sqrt(float(d))
            out.append(vals.transpose(1, 2).reshape([b, self.num_offsets] + size))
        return torch.cat(out, dim=1)
