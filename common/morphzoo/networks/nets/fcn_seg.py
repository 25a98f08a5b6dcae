"""A fully convolutional segmentation network in the FCN-8s pattern (Long et al., CVPR 2015).

The FMIRNet paper's joint framework uses "FCN [14]" as one of its two segmenters. MONAI's own
``FCN``/``MCFCN`` is a ResNet-50 encoder with global convolution blocks (AH-Net), which
downsamples by 32 and needs ImageNet weights to train; for 64x64 hippocampus slices MorphZoo
uses Long et al.'s design at a small width instead: a plain convolutional encoder, class scores
predicted from the 1/4, 1/8 and 1/16 resolution features, fused coarse-to-fine by upsampling
and summation (FCN-8s skip architecture), and upsampled to the input grid. Unlike a U-Net there
is no decoder: only class scores travel up.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv, Pool

from morphzoo.networks.blocks.padding import crop_to_size, pad_to_multiple

__all__ = ["FCNSegmenter"]


class FCNSegmenter(nn.Module):
    """FCN-8s style segmenter, 2D or 3D.

    Encoder stages ``channels[0..4]`` at full, 1/2, 1/4, 1/8 and 1/16 resolution (two 3x3
    convolution + norm + ReLU units each, max-pooling between stages); 1x1 score layers on the
    last three stages; scores fused as ``up(up(s16) + s8) + s4`` (bilinear/trilinear, the FCN
    paper's fixed-bilinear initialisation without the learned part) and upsampled x4.

    Inputs whose spatial sizes are not multiples of 16 are padded (replicate) inside and the
    output cropped back, so any size works.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: number of classes (background included).
        channels: widths of the five encoder stages.
        norm: MONAI norm name or ``(name, args)``.
        dropout: dropout before the score layers.

    Shapes:
        ``(B, in_channels, *S)`` -> logits ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        channels = [int(c) for c in channels]
        if len(channels) != 5:
            raise ValueError(f"channels must give the widths of 5 encoder stages, got {channels}.")
        self.spatial_dims = spatial_dims
        self.multiple = 16
        self.stages = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.stages.append(
                nn.Sequential(
                    Convolution(spatial_dims, cin, c, kernel_size=3, norm=norm, act="relu"),
                    Convolution(spatial_dims, c, c, kernel_size=3, norm=norm, act="relu"),
                )
            )
            cin = c
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        conv = Conv[Conv.CONV, spatial_dims]
        self.score4 = conv(channels[2], out_channels, kernel_size=1)
        self.score8 = conv(channels[3], out_channels, kernel_size=1)
        self.score16 = conv(channels[4], out_channels, kernel_size=1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def _up(self, x: torch.Tensor, size: List[int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError("expected a (B, C, *S) input with " + str(self.spatial_dims) + " spatial dims, got shape " + str(x.shape))
        x, size, padded = pad_to_multiple(x, self.multiple)
        feats: List[torch.Tensor] = []
        h = x
        k = 0
        for stage in self.stages:
            if k > 0:
                h = self.pool(h)
            h = stage(h)
            feats.append(h)
            k += 1
        s4 = self.score4(self.drop(feats[2]))
        s8 = self.score8(self.drop(feats[3]))
        s16 = self.score16(self.drop(feats[4]))
        s8 = s8 + self._up(s16, [int(v) for v in s8.shape[2:]])
        s4 = s4 + self._up(s8, [int(v) for v in s4.shape[2:]])
        out = self._up(s4, [int(v) for v in x.shape[2:]])
        if padded:
            out = crop_to_size(out, size)
        return out
