"""GhostSC convolution: essential 1x1 features + self-calibrated phantom features (fetal_us_seg paper, sec. 2)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm

__all__ = ["AsymmetricConv", "SelfCalibratedConv", "GhostSCConv", "ghost_sc_param_count"]


def ghost_sc_param_count(in_channels: int, out_channels: int, kernel_size: int = 3, groups: int = 1, spatial_dims: int = 2) -> int:
    """Convolution weights of :class:`GhostSCConv` without normalisation layers: the paper's eq. (7).

    ``DR2 = D*1*1*M/2 + 4 * (M/4) * (M/4) * (l*1 + 1*l) / g`` in 2D (``spatial_dims * l`` in 3D):
    the essential 1x1 conv plus the four asymmetric convs K1..K4 of the self-calibrated branch.
    A plain convolution has ``DR1 = l * l * D * M`` (eq. 6).
    """
    q = out_channels // 4
    return in_channels * out_channels // 2 + 4 * q * (q // groups) * spatial_dims * kernel_size


class AsymmetricConv(nn.Sequential):
    """A k^d convolution decomposed into 1D convolutions along each axis (``k x 1`` then ``1 x k`` in 2D).

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        kernel_size: odd kernel length ``l``.
        groups: convolution groups (must divide ``channels``).

    Shapes:
        ``(B, C, H, W[, D])`` -> same shape.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3, groups: int = 1) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        if channels % groups:
            raise ValueError(f"groups={groups} must divide channels={channels}.")
        conv = Conv[Conv.CONV, spatial_dims]
        layers = []
        for axis in range(spatial_dims):
            ks = [1] * spatial_dims
            ks[axis] = kernel_size
            pad = [0] * spatial_dims
            pad[axis] = kernel_size // 2
            layers.append(conv(channels, channels, kernel_size=tuple(ks), padding=tuple(pad), groups=groups, bias=False))
        super().__init__(*layers)


class SelfCalibratedConv(nn.Module):
    """Self-calibrated convolution (SCConv, Liu et al. 2020) with asymmetric grouped convs.

    The input is split in two halves ``a_v`` and ``a_w``. ``a_w`` goes through K1 (plain). ``a_v``
    is calibrated (paper eq. 4): ``K4(K3(a_v) * sigmoid(a_v + up(K2(avgpool_r(a_v)))))``. Output
    ``cat(a_v', a_w')``, the phantom features.

    Args:
        spatial_dims: 2 or 3.
        channels: input = output channels (even).
        kernel_size: asymmetric kernel length.
        pooling_r: down-sampling factor of the calibration branch (4 in SCConv).
        groups: groups of the four convs.

    Shapes:
        ``(B, C, H, W[, D])`` -> same shape.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3, pooling_r: int = 4, groups: int = 1) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SelfCalibratedConv needs an even channel count, got {channels}.")
        half = channels // 2
        self.half = half
        self.pooling_r = pooling_r
        self.k1 = AsymmetricConv(spatial_dims, half, kernel_size, groups)
        self.k2 = AsymmetricConv(spatial_dims, half, kernel_size, groups)
        self.k3 = AsymmetricConv(spatial_dims, half, kernel_size, groups)
        self.k4 = AsymmetricConv(spatial_dims, half, kernel_size, groups)
        self.spatial_dims = spatial_dims
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pool by ``pooling_r`` (ceil), down to at least one voxel per axis."""
        size = [max(1, (int(s) + self.pooling_r - 1) // self.pooling_r) for s in x.shape[2:]]
        if self.spatial_dims == 2:
            return F.adaptive_avg_pool2d(x, size)
        return F.adaptive_avg_pool3d(x, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_v, a_w = x[:, : self.half], x[:, self.half :]
        ctx = F.interpolate(self.k2(self._down(a_v)), size=a_v.shape[2:], mode=self.mode, align_corners=False)
        a_v = self.k4(self.k3(a_v) * torch.sigmoid(a_v + ctx))
        return torch.cat([a_v, self.k1(a_w)], dim=1)


class GhostSCConv(nn.Module):
    """Lightweight conv module: ``cat(essential, phantom)`` (paper eqs. 2-5).

    Essential features: 1x1 conv to ``M/2`` channels (+ norm + ReLU). Phantom features: the
    self-calibrated mapping of the essential features (``M/2`` channels, + norm + ReLU). The
    weights count follows eq. (7) (:func:`ghost_sc_param_count`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: ``D``.
        out_channels: ``M`` (a multiple of 4).
        kernel_size: asymmetric kernel length ``l``.
        pooling_r: calibration down-sampling.
        groups: groups of the asymmetric convs (must divide ``M/4``).
        norm: MONAI norm name (``"batch"`` or ``"instance"``).

    Shapes:
        ``(B, D, H, W[, D])`` -> ``(B, M, H, W[, D])``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        pooling_r: int = 4,
        groups: int = 1,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"GhostSCConv needs out_channels divisible by 4, got {out_channels}.")
        half = out_channels // 2
        conv = Conv[Conv.CONV, spatial_dims]
        norm_t = Norm[norm, spatial_dims]
        self.in_channels = in_channels
        self.essential = nn.Sequential(conv(in_channels, half, kernel_size=1, bias=False), norm_t(half), nn.ReLU(inplace=True))
        self.phantom = nn.Sequential(
            SelfCalibratedConv(spatial_dims, half, kernel_size, pooling_r, groups), norm_t(half), nn.ReLU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"GhostSCConv expects {self.in_channels} input channels, got shape {list(x.shape)}.")
        a_u = self.essential(x)
        return torch.cat([a_u, self.phantom(a_u)], dim=1)
