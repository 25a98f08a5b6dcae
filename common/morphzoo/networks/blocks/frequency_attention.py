"""Frequency channel attention: ECA whose squeeze is a set of DCT components (FcaNet), dimension-generic."""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn as nn

from morphzoo.networks.blocks.eca import ECA

__all__ = ["FrequencyChannelAttention", "lowest_frequencies", "dct_basis"]


def lowest_frequencies(spatial_dims: int, num: int) -> list[tuple[int, ...]]:
    """The ``num`` lowest spatial frequencies, ordered by the sum of their indices (then lexically).

    ``(0, ..., 0)`` comes first: its DCT component is the global average (paper eq. 11), so
    ``num=1`` reduces the attention to plain ECA.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}.")
    side = num  # enough candidates along each axis
    cands = sorted(itertools.product(range(side), repeat=spatial_dims), key=lambda f: (sum(f), f))
    return [tuple(int(v) for v in f) for f in cands[:num]]


def dct_basis(size: Sequence[int], frequency: Sequence[int]) -> torch.Tensor:
    """Separable DCT-II basis ``prod_d cos(pi * u_d * (x_d + 0.5) / L_d)`` on a grid of ``size``.

    The average of ``x * basis`` over the grid is the component of frequency ``u`` normalised so
    that ``u = 0`` gives the mean of ``x``.
    """
    if len(size) != len(frequency):
        raise ValueError(f"size {tuple(size)} and frequency {tuple(frequency)} differ in length.")
    out = torch.ones(())
    for length, u in zip(size, frequency):
        if not 0 <= u < length:
            raise ValueError(f"frequency {u} outside 0..{length - 1} for a pooled size of {length}.")
        x = torch.arange(length, dtype=torch.float64)
        b = torch.cos(math.pi * u * (x + 0.5) / length)
        out = out[..., None] * b
    return out.float()


class FrequencyChannelAttention(ECA):
    """ECA channel attention whose squeeze uses DCT frequency components instead of the average.

    The feature map is first average-pooled to ``dct_size`` per axis (FcaNet), the channels are cut
    into ``len(frequencies)`` consecutive groups, and group ``g`` is summarised by its DCT
    component of frequency ``frequencies[g]``. The descriptor then goes through ECA's 1D conv and
    sigmoid (kernel size from :func:`morphzoo.networks.blocks.eca_kernel_size`).

    Args:
        spatial_dims: 2 or 3.
        channels: number of channels ``C``.
        frequencies: frequency index tuples (one per channel group); default the
            ``num_frequencies`` lowest, starting with the zero frequency.
        num_frequencies: how many lowest frequencies when ``frequencies`` is None (clipped to ``C``).
        dct_size: pooled spatial size per axis on which the DCT components are taken.
        kernel_size: ECA 1D kernel size (None: adaptive formula).

    Shapes:
        ``x``: ``(B, C, H, W[, D])`` -> same shape.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        frequencies: Sequence[Sequence[int]] | None = None,
        num_frequencies: int = 4,
        dct_size: int = 7,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, channels, kernel_size)
        if spatial_dims not in (2, 3):
            raise ValueError(f"FrequencyChannelAttention supports spatial_dims 2 or 3, got {spatial_dims}.")
        if frequencies is None:
            frequencies = lowest_frequencies(spatial_dims, min(num_frequencies, channels))
        freqs = [tuple(int(v) for v in f) for f in frequencies]
        if not freqs or any(len(f) != spatial_dims for f in freqs):
            raise ValueError(f"frequencies must be non-empty {spatial_dims}-tuples, got {frequencies}.")
        if len(freqs) > channels:
            raise ValueError(f"{len(freqs)} frequencies for {channels} channels: at most one per channel.")
        self.frequencies = freqs
        size = (int(dct_size),) * spatial_dims
        group = torch.arange(channels) * len(freqs) // channels  # consecutive channel groups
        basis = torch.stack([dct_basis(size, freqs[int(g)]) for g in group])  # (C, *size)
        self.register_buffer("basis", basis, persistent=False)
        self.pool = nn.AdaptiveAvgPool2d(size) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(size)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """Channel descriptor ``(B, C)``: each channel's DCT component of its group's frequency."""
        pooled = self.pool(x)
        return (pooled * self.basis.unsqueeze(0)).flatten(2).mean(dim=2)
