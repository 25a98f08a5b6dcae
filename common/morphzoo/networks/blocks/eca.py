"""Efficient Channel Attention (ECA-Net, Wang et al. 2020), dimension-generic.

The project's one channel-attention block: ``dense_eca_unet`` uses it with global average pooling
as the squeeze, ``fetal_us_seg`` swaps only the squeeze for frequency (DCT) components
(:class:`morphzoo.networks.blocks.FrequencyChannelAttention`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["ECA", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive 1D kernel size, the one formula used across MorphZoo.

    ``t = int(|log2(C) + b| / gamma)``; ``k = t`` if ``t`` is odd else ``t + 1``
    (ECA-Net reference code). C=16 -> 3, C=64 -> 3, C=256 -> 5, C=512 -> 5.

    Args:
        channels: number of channels ``C`` (>= 1).
        gamma: the formula's gamma (2).
        b: the formula's b (1).

    Raises:
        ValueError: if ``channels < 1``.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}.")
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 == 1 else t + 1


class ECA(nn.Module):
    """Channel attention: squeeze -> 1D conv across channels -> sigmoid -> rescale the input.

    ``y = x * sigmoid(conv1d(squeeze(x)))``. The default squeeze is global average pooling (ECA);
    subclasses replace :meth:`squeeze` (e.g. frequency components, FcaNet).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        channels: number of input channels ``C``.
        kernel_size: 1D kernel size; ``None`` uses :func:`eca_kernel_size` (must be odd).

    Shapes:
        ``x``: ``(B, C, H, W[, D])`` -> same shape.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        k = eca_kernel_size(channels) if kernel_size is None else int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {k}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """Channel descriptor ``(B, C)``: the global average over all spatial positions."""
        return x.flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"ECA expects input of shape (B, {self.channels}, *{self.spatial_dims} spatial dims), got {list(x.shape)}."
            )
        s = self.squeeze(x)  # (B, C)
        w = torch.sigmoid(self.conv(s.unsqueeze(1))).squeeze(1)  # (B, C)
        return x * w.reshape(w.shape + (1,) * self.spatial_dims)
