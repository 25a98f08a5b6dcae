"""Densely connected (UNet++-nested) VoxelMorph-style U-Net with ECA attention in the decoder.

Zheng, Xie, Jiang, Zhou, Pan, "An Unsupervised Single-Modal Medical Image Registration Algorithm
Based on Deep Learning" (2023): VoxelMorph's U-Net whose long skips are replaced by dense nested
skips (UNet++ topology) and whose decoder applies ECA channel attention to every upsampled tensor.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from morphzoo.networks.blocks.eca import ECA

__all__ = ["DenseECAUNet", "dense_eca_nodes"]


def dense_eca_nodes(depth: int, dense: bool = True) -> list[tuple[int, int]]:
    """Decoder nodes ``X(i, j)`` (level ``i``, column ``j >= 1``) in computation order.

    Level ``i`` has resolution ``1 / 2**i``; ``X(i, 0)`` are the encoder nodes and ``X(depth, 0)``
    the bottleneck. ``dense=True``: every node with ``i + j <= depth`` (UNet++); ``dense=False``:
    only the U-Net decoder path ``X(i, depth - i)`` (VoxelMorph's long skips). Nodes are ordered by
    column, so ``X(i + 1, j - 1)`` always comes before ``X(i, j)``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    nodes = [(i, j) for j in range(1, depth + 1) for i in range(depth - j + 1)]
    return nodes if dense else [(i, j) for i, j in nodes if i + j == depth]


def _conv_act(conv_type, in_ch: int, out_ch: int) -> nn.Sequential:
    """conv k3 s1 (same padding) + LeakyReLU(0.2), VoxelMorph's conv block."""
    return nn.Sequential(conv_type(in_ch, out_ch, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.2))


class _DecoderNode(nn.Module):
    """``X(i, j) = conv(concat[X(i, 0), ..., X(i, j-1), ECA(up(X(i+1, j-1)))])``."""

    def __init__(self, spatial_dims: int, conv_type, skip_channels: int, below_channels: int, out_channels: int, use_eca: bool) -> None:
        super().__init__()
        self.attention = ECA(spatial_dims, below_channels) if use_eca else nn.Identity()
        self.conv = _conv_act(conv_type, skip_channels + below_channels, out_channels)

    def forward(self, skips: List[torch.Tensor], below: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(below, size=skips[0].shape[2:], mode="nearest")
        return self.conv(torch.cat(skips + [self.attention(up)], dim=1))


class DenseECAUNet(nn.Module):
    """VoxelMorph-style registration U-Net with dense nested skips and ECA channel attention.

    Maps a concatenated ``(moving, fixed)`` pair ``(B, 2, H, W[, D])`` to a displacement field
    ``(B, spatial_dims, H, W[, D])`` in voxels, channel order = array-axis order (MONAI ``Warp``
    convention); warping happens outside (:class:`morphzoo.engines.RegistrationInferer`).

    Topology (``depth = len(encoder_channels) - 1``, 4 by default): encoder nodes ``X(i, 0)`` =
    conv k3 s1 + LeakyReLU(0.2), each followed by max-pooling, so ``X(i, 0)`` lives at ``1/2**i``
    (``X(depth, 0)`` at 1/16 is the bottleneck). Decoder nodes ``X(i, j)``, ``j >= 1``, concatenate
    every earlier node of their level with the nearest-upsampled ``X(i+1, j-1)`` (passed through
    ECA when ``use_eca``) and apply one conv block; ``dense=False`` keeps only the plain U-Net path
    ``X(i, depth-i)`` (long skips from ``X(i, 0)`` only, VoxelMorph). The last top node
    ``X(0, depth)`` feeds VoxelMorph's full-resolution tail convs and the flow conv (k3, init
    ``N(0, flow_init_std)``, bias 0). With the default widths and ``dense=False, use_eca=False``
    the network is VoxelMorph-2 (encoder 16-32-32-32, decoder 32-32-32-32-32, tail 16-16).

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: widths of ``X(0, 0) .. X(depth, 0)``.
        decoder_channels: widths of the decoder nodes of levels ``0 .. depth-1`` (every column).
        final_conv_channels: full-resolution tail convs after ``X(0, depth)``.
        use_eca: ECA on each upsampled tensor before concatenation (ablation switch).
        dense: UNet++ nested skips; ``False`` = VoxelMorph's plain long skips (ablation switch).
        flow_init_std: std of the flow conv's normal init (VoxelMorph: 1e-5).

    Shapes:
        input ``(B, 2, H, W[, D])`` with every spatial size divisible by ``2**depth``;
        output ``(B, spatial_dims, H, W[, D])``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        encoder_channels: Sequence[int] = (16, 32, 32, 32, 32),
        decoder_channels: Sequence[int] = (32, 32, 32, 32),
        final_conv_channels: Sequence[int] = (16, 16),
        use_eca: bool = True,
        dense: bool = True,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        depth = len(encoder_channels) - 1
        if depth < 1:
            raise ValueError(f"encoder_channels needs at least 2 levels, got {tuple(encoder_channels)}.")
        if len(decoder_channels) != depth:
            raise ValueError(
                f"decoder_channels needs one width per decoder level ({depth}), got {tuple(decoder_channels)}."
            )
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.depth = depth
        self.use_eca = use_eca
        self.dense = dense

        enc: list[nn.Module] = []
        in_ch = 2
        for ch in encoder_channels:
            enc.append(_conv_act(conv_type, in_ch, ch))
            in_ch = ch
        self.encoder = nn.ModuleList(enc)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)

        width = {(i, 0): int(c) for i, c in enumerate(encoder_channels)}
        nodes = dense_eca_nodes(depth, dense)
        dec: list[nn.Module] = []
        for i, j in nodes:
            skip_ch = sum(width[(i, k)] for k in range(j) if (i, k) in width)
            below = width[(i + 1, j - 1)]
            width[(i, j)] = int(decoder_channels[i])
            dec.append(_DecoderNode(spatial_dims, conv_type, skip_ch, below, width[(i, j)], use_eca))
        self.decoder = nn.ModuleList(dec)
        self.node_levels: List[int] = [i for i, _ in nodes]

        tail: list[nn.Module] = []
        in_ch = width[(0, depth)]
        for ch in final_conv_channels:
            tail.append(_conv_act(conv_type, in_ch, ch))
            in_ch = ch
        self.tail = nn.Sequential(*tail) if tail else nn.Identity()
        self.flow = conv_type(in_ch, spatial_dims, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(self.flow.weight, mean=0.0, std=flow_init_std)
        nn.init.zeros_(self.flow.bias)

    def forward(self, concatenated_pairs: torch.Tensor) -> torch.Tensor:
        """Args:
            concatenated_pairs: ``(B, 2, H, W[, D])`` moving and fixed images.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` displacement field in voxels.
        """
        x = concatenated_pairs
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != 2:
            raise ValueError(
                "expected a (B, 2, *spatial) pair with " + str(self.spatial_dims) + " spatial dims, got shape " + str(x.shape)
            )
        multiple = 2**self.depth
        for s in x.shape[2:]:
            if s % multiple != 0:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by " + str(multiple) + ".")
        rows: List[List[torch.Tensor]] = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            rows.append([x])
        for k, node in enumerate(self.decoder):
            i = self.node_levels[k]
            rows[i].append(node(rows[i], rows[i + 1][-1]))
        return self.flow(self.tail(rows[0][-1]))
