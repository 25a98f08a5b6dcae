"""Coarse-to-fine cascade of three miniaturised FCNs for fetal ultrasound registration.

"Fetal development ultrasound image registration", section 3 of the paper in
``shared/papers/000_6c71c1c724af9d30.txt``: three small fully convolutional sub-networks estimate
a displacement field at 1/4, 1/2 and full resolution; each finer one estimates the residual
between the fixed image and the moving image warped by the coarser estimate, and the fields add
up (its Eqs. 12-13). The sub-networks are trained stage by stage (scale 1, then 2, then 3 with
1 and 2 frozen), which :class:`morphzoo.engines.FreezeParameters` and the bundle's stage configs
express.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from morphzoo.networks.blocks.warp import warp_image
from morphzoo.networks.nets.fcn_deep_selfsup import avg_pool_by, resize_displacement

__all__ = ["CascadeFCN", "MiniFCN"]


class MiniFCN(nn.Module):
    """One miniaturised sub-network: ``len(channels)`` 3-kernel convolutions with LeakyReLU, then a
    3-kernel convolution to the ``spatial_dims``-channel field (initialised N(0, ``flow_init_std``)).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2: moving, fixed).
        channels: widths of the hidden convolutions.
        negative_slope: LeakyReLU slope (the paper's Eq. 14 leaves it open).
        flow_init_std: std of the field layer's normal init (bias 0).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 2,
        channels: Sequence[int] = (32, 32, 32, 32),
        negative_slope: float = 0.2,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        cin = in_channels
        for c in channels:
            layers.append(Convolution(spatial_dims, cin, int(c), kernel_size=3, act=("leakyrelu", {"negative_slope": negative_slope}),
                                      norm=None, bias=True))
            cin = int(c)
        self.features = nn.Sequential(*layers)
        self.flow = Conv[Conv.CONV, spatial_dims](cin, spatial_dims, kernel_size=3, padding=1)
        self.flow_init_std = float(flow_init_std)
        self.init_flow()

    def init_flow(self) -> None:
        nn.init.normal_(self.flow.weight, mean=0.0, std=self.flow_init_std)
        if self.flow.bias is not None:
            nn.init.zeros_(self.flow.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` -> ``(B, spatial_dims, *S)`` field in voxels of ``S``."""
        return self.flow(self.features(x))


class CascadeFCN(nn.Module):
    """Three miniaturised FCNs, coarse to fine: a ``(moving, fixed)`` pair -> displacement field.

    Stage ``s`` (factors ``scales = (4, 2, 1)``)::

        M_s = pool_s(M ∘ up(ψ'_{s-1}))          # the moving image warped at full resolution by the
        F_s = pool_s(F)                          # previous estimate, then average-pooled by scales[s]
        ψ_s = subnet_s(concat(M_s, F_s))         # residual field at 1/scales[s] resolution
        ψ'_s = ψ_s + up(ψ'_{s-1})                # ψ'_1 = ψ_1 (paper Eqs. 12-13)

    ``up`` resizes a field to a finer grid (linear, ``align_corners=False``) and scales its values by
    the size ratio. The paper warps the moving image by the upsampled previous field at the original
    resolution and then pools it, which is what is done here. Only the first ``num_stages`` stages
    run (``num_stages < 3`` while the coarser stages are trained); the parameters of all of them are
    always built, so every stage's checkpoint has the same keys.

    Displacements are in voxels of the grid each field lives on, channel order = array-axis order
    (MONAI ``Warp`` convention, ``warped(x) = moving(x + ddf(x))``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: 2 (moving, fixed): the first channel is the one warped between stages.
        channels: hidden widths of each sub-network (the paper: 32-channel 3x3 convolutions).
        scales: pooling factor of each stage, coarse to fine; each must divide the previous one.
        num_stages: how many stages run (1 to ``len(scales)``, default all).
        return_all: return ``[ψ'_S, ..., ψ'_1]`` (finest first, each on its own grid) instead of the
            final field upsampled to the input grid; also per call (``forward(x, return_all=True)``).
        negative_slope: LeakyReLU slope.
        flow_init_std: std of the normal init of every field layer.

    Raises:
        ValueError: on bad dimensions, scales or stage count, or an input that is not
            ``(B, 2, *S)`` with every spatial size divisible by ``scales[0]``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        channels: Sequence[int] = (32, 32, 32, 32),
        scales: Sequence[int] = (4, 2, 1),
        num_stages: Optional[int] = None,
        return_all: bool = False,
        negative_slope: float = 0.2,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels != 2:
            raise ValueError(f"in_channels must be 2 (moving, fixed), got {in_channels}.")
        scales = [int(s) for s in scales]
        if not scales or any(s < 1 for s in scales) or any(a % b != 0 for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be positive, coarse to fine, each dividing the previous one, got {scales}.")
        total = len(scales)
        num_stages = total if num_stages is None else int(num_stages)
        if not 1 <= num_stages <= total:
            raise ValueError(f"num_stages must be in 1..{total}, got {num_stages}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.scales: List[int] = scales
        self.num_stages = num_stages
        self.return_all = return_all
        self.size_multiple = scales[0]
        self.stages = nn.ModuleList(
            [MiniFCN(spatial_dims, in_channels, channels, negative_slope, flow_init_std) for _ in scales]
        )

    @torch.jit.unused
    def reset_parameters(self) -> None:
        """Re-initialise every layer as a freshly built network (near-zero field layers)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.reset_parameters()
        for stage in self.stages:
            stage.init_flow()

    def forward(
        self, concatenated_pairs: torch.Tensor, return_all: Optional[bool] = None
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Args:
            concatenated_pairs: ``(B, 2, H, W[, D])`` moving and fixed images.
            return_all: overrides the ``return_all`` attribute for this call.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` field on the input grid, or (``return_all``) the list of
            the stages' fields finest first, each on its stage's grid.
        """
        x = concatenated_pairs
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected a (B, 2, *spatial) pair with " + str(self.spatial_dims) + " spatial dims, got shape " + str(x.shape)
            )
        size: List[int] = [int(s) for s in x.shape[2:]]
        for s in size:
            if s % self.size_multiple != 0:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by " + str(self.size_multiple) + ".")
        moving = x[:, :1]
        fixed = x[:, 1:]
        fields: List[torch.Tensor] = []
        field = torch.zeros([x.shape[0], self.spatial_dims] + size, dtype=x.dtype, device=x.device)
        for k, stage in enumerate(self.stages):
            if k < self.num_stages:
                factor = self.scales[k]
                grid: List[int] = [s // factor for s in size]
                mov = moving
                prev = field
                if k > 0:
                    prev = resize_displacement(field, grid)
                    mov = warp_image(moving, resize_displacement(field, size))
                field = stage(torch.cat([avg_pool_by(mov, factor), avg_pool_by(fixed, factor)], dim=1))
                if k > 0:
                    field = field + prev
                fields.append(field)
        want_all = self.return_all if return_all is None else return_all
        if want_all:
            fields.reverse()
            return fields
        return resize_displacement(field, size)
