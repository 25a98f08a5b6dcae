"""Run a 2D network on a 2D slice or, slice by slice, on a 3D volume."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from monai.inferers import Inferer, SliceInferer

__all__ = ["SliceWiseInferer"]


class SliceWiseInferer(Inferer):
    """MONAI :class:`~monai.inferers.SliceInferer` for volumes, a plain call for slices.

    A 5D input ``(B, C, D, H, W)`` is segmented slice by slice along spatial axis
    ``spatial_dim`` (0: the first array axis) by MONAI's ``SliceInferer``, ``sw_batch_size``
    slices at a time, each slice whole (the window is the slice's full in-plane size); a 4D
    input ``(B, C, H, W)`` goes straight to the network. One bundle ``inferer`` thus serves
    ``--image slice.png`` and ``--image volume.nii.gz``, and MONAI Label reads it as it is.

    Args:
        spatial_dim: axis of the volume the slices are taken along.
        sw_batch_size: slices per network call.
    """

    def __init__(self, spatial_dim: int = 0, sw_batch_size: int = 64) -> None:
        super().__init__()
        if spatial_dim not in (0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2, got {spatial_dim}.")
        self.spatial_dim = int(spatial_dim)
        self.sw_batch_size = int(sw_batch_size)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        if inputs.ndim == 4:
            return network(inputs, *args, **kwargs)
        if inputs.ndim != 5:
            raise ValueError(f"expected a (B, C, H, W) slice or a (B, C, D, H, W) volume, got shape {tuple(inputs.shape)}.")
        plane: Sequence[int] = [int(s) for k, s in enumerate(inputs.shape[2:]) if k != self.spatial_dim]
        inferer = SliceInferer(spatial_dim=self.spatial_dim, roi_size=plane, sw_batch_size=self.sw_batch_size, progress=False)
        return inferer(inputs, network, *args, **kwargs)
