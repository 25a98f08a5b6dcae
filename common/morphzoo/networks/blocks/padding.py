"""Pad a batch to a multiple of a network's total downsampling, and crop it back (TorchScript-safe)."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple", "crop_to_size"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, List[int], bool]:
    """Replicate-pad the end of every spatial axis of ``x`` ``(B, C, *S)`` up to a multiple of ``multiple``.

    Returns:
        The padded tensor, the original spatial size ``S`` and whether anything was padded.
    """
    size: List[int] = [int(s) for s in x.shape[2:]]
    pad: List[int] = []
    for s in size[::-1]:  # F.pad order: last axis first
        pad += [0, (-s) % multiple]
    padded = False
    for p in pad:
        if p > 0:
            padded = True
    if padded:
        x = F.pad(x, pad, mode="replicate")
    return x, size, padded


def crop_to_size(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """The leading ``size`` voxels of each spatial axis of ``x`` ``(B, C, *S)`` (2D or 3D)."""
    if len(size) == 3:
        return x[:, :, : size[0], : size[1], : size[2]]
    return x[:, :, : size[0], : size[1]]
