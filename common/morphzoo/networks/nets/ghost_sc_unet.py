"""Lightweight ultrasound segmentation U-Net (fetal_us_seg): GhostSC blocks + frequency channel attention."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UpSample
from monai.networks.layers.factories import Conv, Pool
from monai.utils import ensure_tuple_rep

from morphzoo.networks.blocks.frequency_attention import FrequencyChannelAttention
from morphzoo.networks.blocks.ghost_sc import GhostSCConv

__all__ = ["GhostSCBlock", "GhostSCUNet"]


class GhostSCBlock(nn.Sequential):
    """``GhostSC -> GhostSC -> frequency channel attention``: the network's conv block.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (multiple of 4).
        num_frequencies: DCT components in the attention squeeze (1 = plain ECA).
        groups: groups of the asymmetric convs.

    Shapes:
        ``(B, in, H, W[, D])`` -> ``(B, out, H, W[, D])``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_frequencies: int = 4, groups: int = 1) -> None:
        super().__init__(
            GhostSCConv(spatial_dims, in_channels, out_channels, groups=groups),
            GhostSCConv(spatial_dims, out_channels, out_channels, groups=groups),
            FrequencyChannelAttention(spatial_dims, out_channels, num_frequencies=num_frequencies),
        )


class _Up(nn.Module):
    """Deconv x2 (halving channels unless ``halves`` is False), pad to the skip, concat, block."""

    def __init__(self, spatial_dims: int, in_ch: int, cat_ch: int, out_ch: int, halves: bool, num_frequencies: int, groups: int) -> None:
        super().__init__()
        up_ch = in_ch // 2 if halves else in_ch
        self.upsample = UpSample(spatial_dims, in_ch, up_ch, 2, mode="deconv")
        self.block = GhostSCBlock(spatial_dims, cat_ch + up_ch, out_ch, num_frequencies, groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)
        pad = [0] * (2 * (x.ndim - 2))
        for i in range(x.ndim - 2):  # odd sizes: replicate-pad the upsampled map to the skip's size
            if skip.shape[-i - 1] != x.shape[-i - 1]:
                pad[2 * i + 1] = skip.shape[-i - 1] - x.shape[-i - 1]
        x = torch.nn.functional.pad(x, pad, "replicate")
        return self.block(torch.cat([skip, x], dim=1))


class GhostSCUNet(nn.Module):
    """U-Net whose conv blocks are ``GhostSC -> GhostSC -> frequency channel attention``.

    The topology, widths and up-sampling are those of :class:`monai.networks.nets.BasicUNet`
    (4 max-pool levels, deconv up-sampling, skip concatenation), so ``BasicUNet`` with the same
    ``features`` is the plain U-Net it is compared with.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: image channels.
        out_channels: classes (logits).
        features: six widths as BasicUNet (encoder levels 0-4, last decoder level); each a
            multiple of 4.
        num_frequencies: DCT components in each attention squeeze.
        groups: groups of the asymmetric convs.

    Shapes:
        ``x``: ``(B, in_channels, H, W[, D])`` -> logits ``(B, out_channels, H, W[, D])``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256, 16),
        num_frequencies: int = 4,
        groups: int = 1,
    ) -> None:
        super().__init__()
        fea = ensure_tuple_rep(features, 6)
        if any(int(f) % 4 for f in fea):
            raise ValueError(f"every width must be a multiple of 4 (GhostSC halves and quarters), got {fea}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        nf, g = num_frequencies, groups
        pool = Pool[Pool.MAX, spatial_dims]
        self.conv_0 = GhostSCBlock(spatial_dims, in_channels, fea[0], nf, g)
        self.down = nn.ModuleList(
            [nn.Sequential(pool(2), GhostSCBlock(spatial_dims, fea[i], fea[i + 1], nf, g)) for i in range(4)]
        )
        self.up = nn.ModuleList(
            [
                _Up(spatial_dims, fea[4], fea[3], fea[3], True, nf, g),
                _Up(spatial_dims, fea[3], fea[2], fea[2], True, nf, g),
                _Up(spatial_dims, fea[2], fea[1], fea[1], True, nf, g),
                _Up(spatial_dims, fea[1], fea[0], fea[5], False, nf, g),
            ]
        )
        self.final_conv = Conv[Conv.CONV, spatial_dims](fea[5], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"GhostSCUNet expects input (B, {self.in_channels}, *{self.spatial_dims} spatial dims), got {list(x.shape)}."
            )
        skips = [self.conv_0(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips[4]
        for i, up in enumerate(self.up):
            y = up(y, skips[3 - i])
        return self.final_conv(y)
