"""A learned affine pre-alignment network: MONAI ``GlobalNet``'s encoder returning the affine matrix itself."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import GlobalNet

__all__ = ["AffineNet"]


class AffineNet(GlobalNet):
    """A learned affine: MONAI ``GlobalNet``'s encoder with a moments head that returns the
    normalised affine ``theta`` itself.

    ``GlobalNet``'s own head is a dense layer over the flattened coarsest feature map, producing
    the affine in voxel coordinates: there one Adam step moves every one of its ~10^4 weights at
    once, and a voxel-coordinate linear part multiplies coordinates of order 100, so the first
    steps throw the map far outside the image (measured: Dice loss 0.31 -> 1.00 after one step
    at lr 1e-4). The head here pools instead: for each feature channel ``f`` it takes the
    weighted moments ``mean(f)``, ``mean(f x_k)`` and ``mean(f x_k x_l)`` over normalised
    coordinates ``x`` (where the learned features are and how they spread, which is what an affine
    between two images depends on), then a two-layer perceptron whose last layer starts at zero,
    so training starts from the identity and the output is independent of the grid size.

    The pair is resized to ``image_size`` first (the encoder's working grid), and the affine is
    returned in normalised coordinates (see :mod:`morphzoo.transforms.affine`), so it applies
    unchanged on any grid of the same field of view.

    Args:
        spatial_dims: 2 or 3.
        image_size: the encoder's input grid, each entry divisible by ``2 ** depth``.
        num_channel_initial: channels of the first level (doubling per level).
        depth: number of down-sampling levels.
        in_channels: 2 (moving, fixed).
        hidden: width of the head's hidden layer.

    Shapes: input ``(B, 2, *S)`` (any ``S``); output ``(B, N, N + 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        image_size: Sequence[int] = (80, 120),
        num_channel_initial: int = 16,
        depth: int = 3,
        in_channels: int = 2,
        hidden: int = 128,
    ) -> None:
        if spatial_dims not in (2, 3) or len(image_size) != spatial_dims:
            raise ValueError(f"image_size {list(image_size)} must have spatial_dims={spatial_dims} (2 or 3) entries.")
        super().__init__(
            image_size=[int(s) for s in image_size],
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_channel_initial=num_channel_initial,
            depth=depth,
        )
        self.net_size = tuple(int(s) for s in image_size)
        n = spatial_dims
        channels = self.num_channels[-1]
        moments = 1 + n + n * (n + 1) // 2
        del self.output_block  # GlobalNet's dense voxel-coordinate head (see above)
        self.head = nn.Sequential(nn.Linear(channels * moments, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n * (n + 1)))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("identity", torch.eye(n, n + 1).reshape(1, -1), persistent=False)

    def build_output_block(self) -> nn.Module:
        return nn.Identity()  # replaced by the moments head in __init__

    def _moments(self, f: torch.Tensor) -> torch.Tensor:
        n = self.spatial_dims
        axes = [torch.linspace(-1.0, 1.0, s, dtype=f.dtype, device=f.device) if s > 1 else torch.zeros(1, dtype=f.dtype, device=f.device) for s in f.shape[2:]]
        x = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(n, -1)  # (N, P)
        basis = [torch.ones_like(x[0])] + [x[k] for k in range(n)] + [x[k] * x[l] for k in range(n) for l in range(k, n)]
        basis = torch.stack(basis, dim=0)  # (M, P)
        flat = f.reshape(f.shape[0], f.shape[1], -1)  # (B, C, P)
        return torch.einsum("bcp,mp->bcm", flat, basis).reshape(f.shape[0], -1) / flat.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Args:
            x: ``(B, 2, *S)`` moving and fixed images (normalised intensities).

        Returns:
            ``(B, N, N + 1)`` affine in normalised coordinates, fixed -> moving.
        """
        n = self.spatial_dims
        if x.ndim != n + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, *spatial) input with {n} spatial dims, got shape {tuple(x.shape)}.")
        if tuple(x.shape[2:]) != self.net_size:
            x = F.interpolate(x, size=self.net_size, mode="bilinear" if n == 2 else "trilinear", align_corners=True)
        encoded = x
        for encode_conv, encode_pool in zip(self.encode_convs, self.encode_pools):
            encoded = encode_pool(encode_conv(encoded))
        feats = self.bottom_block(encoded)
        theta = self.identity + self.head(self._moments(feats))
        return theta.reshape(-1, n, n + 1)
