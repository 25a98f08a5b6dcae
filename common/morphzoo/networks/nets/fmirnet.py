"""FMIRNet: multi-scale unsupervised registration with spatial-attention fusion.

"FMIRNet" (``shared/papers/001_1bf713cde287bab1.txt``): one ResUNet estimates displacement fields
Φ1, Φ2, Φ3 from the image pair at full, 1/2 and 1/4 resolution; Φ2 and Φ3 are upsampled (x2, x4,
values scaled) to Φ'2, Φ'3, fused with equal influence, Φp = Φ1 + Φ'2 + Φ'3 (its Eq. 2), and
refined by a spatial attention module, Φ = sigmoid(conv(Φp)) ⊗ Φp. The paper is 2D and calls 3D
future work; the network here is dimension-generic. Its ablations FMIRNet-1 (Φ1 only) and
FMIRNet-2 (Φ1 + Φ'2) are ``num_scales=1`` and ``num_scales=2``.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.segresnet_block import ResBlock
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer

from morphzoo.networks.blocks.padding import crop_to_size, pad_to_multiple
from morphzoo.networks.nets.fcn_deep_selfsup import avg_pool_by, resize_displacement

__all__ = ["FMIRNet", "ResUNet"]


class ResUNet(nn.Module):
    """A residual U-Net of pre-activation units (MONAI's ``ResBlock``: norm, act, conv, twice, plus
    the identity), the field estimator of FMIRNet (the paper cites Zhang et al.'s ResUNet).

    Level ``i`` has ``channels[i]`` features: level 0 is a 3-kernel convolution and a residual unit,
    each deeper level a stride-2 convolution and a residual unit; each decoder level upsamples
    (linear), concatenates the skip, mixes with a 1-kernel convolution and applies a residual unit.
    Inputs whose size is not a multiple of ``2 ** (len(channels) - 1)`` are padded (replicate) and
    the output cropped back, so any grid works.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2: moving, fixed).
        out_channels: feature channels of the output (``channels[0]`` when ``None``).
        channels: widths per level (spec: 16-32-64-128).
        norm: MONAI norm spec of the residual units.
        act: MONAI activation spec.

    Shapes:
        ``(B, in_channels, *S)`` -> ``(B, channels[0], *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        norm: tuple | str = ("group", {"num_groups": 8}),
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.2}),
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {channels}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.multiple = 2 ** (len(channels) - 1)
        self.down = nn.ModuleList()
        cin = in_channels
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            self.down.append(nn.Sequential(conv(cin, c, kernel_size=3, stride=stride, padding=1),
                                           ResBlock(spatial_dims, c, norm=norm, act=act)))
            cin = c
        self.up = nn.ModuleList()
        for i in range(len(channels) - 2, -1, -1):
            c = channels[i]
            self.up.append(nn.Sequential(conv(channels[i + 1] + c, c, kernel_size=1),
                                         ResBlock(spatial_dims, c, norm=norm, act=act)))
        self.out_norm = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=channels[0])
        self.out_act = get_act_layer(act)
        self.out_channels = channels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size, padded = pad_to_multiple(x, self.multiple)
        skips: List[torch.Tensor] = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        skips.pop()
        mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
        for level in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
            x = level(torch.cat([x, skip], dim=1))
        x = self.out_act(self.out_norm(x))
        if padded:
            x = crop_to_size(x, size)
        return x


class FMIRNet(nn.Module):
    """FMIRNet: a ``(moving, fixed)`` pair -> displacement field, fused from ``num_scales`` scales.

    For scale ``s`` (factor ``2 ** s``: 1, 2, 4)::

        Φ_s = head_s(ResUNet(pool_s(concat(M, F))))     # one shared ResUNet, voxels of its grid
        Φp  = Σ_s up(Φ_s)                              # the paper's Eq. 2 (equal influence)
        Φ   = sigmoid(conv(Φp)) ⊗ Φp                    # spatial attention (its Eqs. 3-4)

    ``pool_s`` is average pooling by ``2 ** s``; ``up`` resizes a field to the input grid (linear,
    ``align_corners=False``) and scales its values by the size ratio. ``separate_heads`` gives each
    scale its own field convolution (the ResUNet itself stays shared); ``attention=False`` returns
    Φp. The attention convolution starts at zero, so an untrained network returns Φp / 2.

    Displacements are in voxels of the input grid, channel order = array-axis order (MONAI
    ``Warp`` convention, ``warped(x) = moving(x + ddf(x))``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: 2 (moving, fixed).
        channels: ResUNet widths per level.
        num_scales: 3 (FMIRNet), 2 (FMIRNet-2: Φ1 + Φ'2) or 1 (FMIRNet-1: Φ1 only).
        separate_heads: one field convolution per scale instead of one shared.
        attention: apply the spatial attention module.
        attention_kernel_size: kernel of the attention convolution.
        norm: MONAI norm spec of the residual units.
        flow_init_std: std of the field layers' normal init (bias 0).

    Raises:
        ValueError: on bad dimensions or scale count, or an input that is not ``(B, 2, *S)`` with
            every spatial size divisible by ``2 ** (num_scales - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_scales: int = 3,
        separate_heads: bool = False,
        attention: bool = True,
        attention_kernel_size: int = 3,
        norm: tuple | str = ("group", {"num_groups": 8}),
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels != 2:
            raise ValueError(f"in_channels must be 2 (moving, fixed), got {in_channels}.")
        if int(num_scales) not in (1, 2, 3):
            raise ValueError(f"num_scales must be 1, 2 or 3, got {num_scales}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_scales = int(num_scales)
        self.separate_heads = bool(separate_heads)
        self.use_attention = bool(attention)
        self.factors: List[int] = [2**k for k in range(self.num_scales)]
        self.size_multiple = self.factors[-1]
        self.flow_init_std = float(flow_init_std)
        self.backbone = ResUNet(spatial_dims, in_channels, channels, norm=norm)
        n_heads = self.num_scales if self.separate_heads else 1
        self.heads = nn.ModuleList(
            [conv(self.backbone.out_channels, spatial_dims, kernel_size=3, padding=1) for _ in range(n_heads)]
        )
        k = int(attention_kernel_size)
        self.attention = conv(spatial_dims, spatial_dims, kernel_size=k, padding=k // 2)
        self.init_fields()

    @torch.jit.unused
    def init_fields(self) -> None:
        """Field heads N(0, ``flow_init_std``), attention convolution zero (weights 1/2 everywhere)."""
        for head in self.heads:
            nn.init.normal_(head.weight, mean=0.0, std=self.flow_init_std)
            nn.init.zeros_(head.bias)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)

    def scale_fields(self, concatenated_pairs: torch.Tensor) -> List[torch.Tensor]:
        """The per-scale fields ``[Φ1, Φ2, ...]``, each on its own grid, in voxels of that grid."""
        x = concatenated_pairs
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected a (B, 2, *spatial) pair with " + str(self.spatial_dims) + " spatial dims, got shape " + str(x.shape)
            )
        for s in x.shape[2:]:
            if int(s) % self.size_multiple != 0:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by " + str(self.size_multiple) + ".")
        fields: List[torch.Tensor] = []
        for k, factor in enumerate(self.factors):
            feats = self.backbone(avg_pool_by(x, factor))
            head_index = k if self.separate_heads else 0
            for j, head in enumerate(self.heads):
                if j == head_index:
                    fields.append(head(feats))
        return fields

    def forward(self, concatenated_pairs: torch.Tensor) -> torch.Tensor:
        """Args:
            concatenated_pairs: ``(B, 2, H, W[, D])`` moving and fixed images.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` fused displacement field on the input grid.
        """
        size: List[int] = [int(s) for s in concatenated_pairs.shape[2:]]
        fused = torch.zeros([concatenated_pairs.shape[0], self.spatial_dims] + size,
                            dtype=concatenated_pairs.dtype, device=concatenated_pairs.device)
        for field in self.scale_fields(concatenated_pairs):
            fused = fused + resize_displacement(field, size)
        if self.use_attention:
            fused = torch.sigmoid(self.attention(fused)) * fused
        return fused
