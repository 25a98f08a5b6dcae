"""VoxelMorph backbones (VoxelMorph-1 / VoxelMorph-2 widths) over MONAI's ``VoxelMorphUNet``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import VoxelMorphUNet

__all__ = ["VoxelMorphBackbone", "VOXELMORPH_VARIANTS"]

# (UNet channels, unet_out_channels, final_conv_channels). Encoder 16-32-32-32 for both; decoder
# 32-32-32-32 then 8-8 (VM-1) or 32-16-16 (VM-2), as in Balakrishnan et al. 2019.
VOXELMORPH_VARIANTS: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {
    "vm1": ((16, 32, 32, 32, 32, 32), 32, (8, 8)),
    "vm2": ((16, 32, 32, 32, 32, 32), 32, (32, 16, 16)),
}


class VoxelMorphBackbone(VoxelMorphUNet):
    """MONAI ``VoxelMorphUNet`` with the paper's named widths and a near-zero initial field.

    Maps a concatenated ``(moving, fixed)`` pair ``(B, 2, H, W[, D])`` to a displacement (or, for
    the diffeomorphic variant, a velocity) field ``(B, spatial_dims, H, W[, D])`` in voxels,
    channel order = array-axis order (MONAI ``Warp`` convention). Warping and integration happen
    outside (see :class:`morphzoo.engines.RegistrationInferer`), which keeps the module
    TorchScript-exportable and ``verify_net_in_out``-checkable.

    Spatial sizes must be divisible by 8 (three poolings).

    Args:
        spatial_dims: 2 or 3.
        variant: ``"vm1"`` or ``"vm2"``; ignored when ``channels`` is given.
        channels, unet_out_channels, final_conv_channels: explicit widths (see ``VoxelMorphUNet``).
        flow_init_std: std of the normal init of the last conv (VoxelMorph uses 1e-5), bias 0.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        variant: str = "vm2",
        channels: Sequence[int] | None = None,
        unet_out_channels: int | None = None,
        final_conv_channels: Sequence[int] | None = None,
        flow_init_std: float = 1e-5,
    ) -> None:
        if variant not in VOXELMORPH_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VOXELMORPH_VARIANTS)}, got {variant!r}.")
        ch, uo, fc = VOXELMORPH_VARIANTS[variant]
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=2,
            unet_out_channels=uo if unet_out_channels is None else unet_out_channels,
            channels=tuple(ch if channels is None else channels),
            final_conv_channels=tuple(fc if final_conv_channels is None else final_conv_channels),
        )
        self.spatial_dims = spatial_dims
        last = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))][-1]
        nn.init.normal_(last.weight, mean=0.0, std=flow_init_std)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, concatenated_pairs: torch.Tensor) -> torch.Tensor:
        """Args:
            concatenated_pairs: ``(B, 2, H, W[, D])`` moving and fixed images.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` field in voxels.
        """
        if concatenated_pairs.ndim != self.spatial_dims + 2 or concatenated_pairs.shape[1] != 2:
            raise ValueError(
                "expected a (B, 2, *spatial) pair with " + str(self.spatial_dims) + " spatial dims, got shape " + str(concatenated_pairs.shape)
            )
        for s in concatenated_pairs.shape[2:]:
            if s % 8 != 0:
                raise ValueError("spatial size " + str(concatenated_pairs.shape[2:]) + " must be divisible by 8.")
        return self.net(concatenated_pairs)
