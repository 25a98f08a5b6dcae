"""Multi-resolution fully convolutional registration network with deep self-supervision (Li & Fan).

Li H., Fan Y. "Non-rigid image registration using fully convolutional networks with deep
self-supervision", arXiv:1709.00799, 2017.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool

__all__ = ["FCNDeepSelfSup", "FCN_ARCHITECTURES", "avg_pool_by", "resize_displacement"]

FCN_ARCHITECTURES = ("multires", "no_pooling", "coarse")


def resize_displacement(field: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Resize a displacement field ``(B, N, *S)`` in voxels to ``size`` and rescale its values.

    Linear interpolation with ``align_corners=False`` (cell-centred grids, the convention of the
    average-pooled image pyramid the coarse fields are compared with); component ``k`` is
    multiplied by ``size[k] / S[k]``. TorchScript-compatible; a no-op when the sizes agree.
    """
    src = field.shape[2:]
    same = True
    for k in range(len(size)):
        if int(src[k]) != size[k]:
            same = False
    if same:
        return field
    mode = "trilinear" if len(size) == 3 else "bilinear"
    out = F.interpolate(field, size=size, mode=mode, align_corners=False)
    scales: List[float] = [float(size[k]) / float(src[k]) for k in range(len(size))]
    scale = torch.tensor(scales, dtype=field.dtype, device=field.device)
    return out * scale.view([1, len(size)] + [1] * len(size))


def avg_pool_by(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool ``(B, C, *S)`` by ``factor`` along every spatial axis (a level of an image
    pyramid; the identity for ``factor == 1``). TorchScript-compatible; 2D or 3D from ``x.ndim``."""
    if factor == 1:
        return x
    if x.ndim == 5:
        return F.avg_pool3d(x, kernel_size=factor, stride=factor)
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


class FCNDeepSelfSup(nn.Module):
    """Li & Fan's multi-resolution FCN: a ``(moving, fixed)`` pair -> displacement fields at full,
    1/2 and 1/4 resolution, trained with a similarity loss at every resolution (deep self-supervision).

    Architecture (``architecture="multires"``, paper Fig. 1b; every conv/deconv is kernel 3 and
    followed by batch norm + ReLU; regression layers are plain 3-kernel convolutions)::

        Conv1 32 -> MaxPool(3, stride 2) -> Conv2 64 -> MaxPool(3, stride 2) -> Conv3 128 -> Reg3 (1/4)
        Conv3 -> Deconv1 64 (stride 2) -> Conv4 64 -> Reg2 (1/2)
        Conv4 -> Deconv2 32 (stride 2) -> Reg1 (full resolution)

    The paper's text gives the convolutions stride 2, which cannot yield fields at 1, 1/2 and 1/4
    resolution with two poolings and two stride-2 deconvolutions; the default ``conv_stride=1``
    assumes stride-1 convolutions. With ``conv_stride=2`` the literal reading is built and every
    field is interpolated (values rescaled) to its nominal resolution.

    The paper's ablations: ``"no_pooling"`` keeps Conv1-Conv3 without pooling and one full
    resolution regression layer; ``"coarse"`` keeps the pooled Conv1-Conv3 + Reg3 and upsamples the
    1/4 field to full resolution by (bi/tri)linear interpolation (values scaled by 4). Both return
    a single field.

    Displacements are in voxels of the grid each field lives on, channel order = array-axis order
    (MONAI ``Warp`` convention). The regression layers are initialised N(0, ``flow_init_std``), so
    the initial fields are near zero (our choice; the paper does not say).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2: moving, fixed).
        channels: widths of Conv1, Conv2, Conv3, Conv4 (paper: 32, 64, 128, 64).
        deconv_channels: widths of Deconv1, Deconv2 (paper: 64, 32).
        architecture: ``"multires"`` (the paper's model), ``"no_pooling"`` or ``"coarse"``.
        conv_stride: stride of Conv1-Conv4 (1: our assumption; 2: the paper's literal text).
        return_all: return every field (finest first) instead of the full-resolution one; can
            also be set per call (``forward(x, return_all=True)``) or as an attribute.
        flow_init_std: std of the normal init of the regression layers (bias 0).

    Raises:
        ValueError: on an unknown architecture, a bad stride or dimension, or an input that is not
            ``(B, in_channels, *S)`` with every spatial size divisible by 4 (pooled architectures).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 64),
        deconv_channels: Sequence[int] = (64, 32),
        architecture: str = "multires",
        conv_stride: int = 1,
        return_all: bool = False,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if architecture not in FCN_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {FCN_ARCHITECTURES}, got {architecture!r}.")
        if conv_stride not in (1, 2):
            raise ValueError(f"conv_stride must be 1 or 2, got {conv_stride}.")
        if len(channels) != 4 or len(deconv_channels) != 2:
            raise ValueError(f"need 4 conv and 2 deconv widths, got {list(channels)} and {list(deconv_channels)}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.architecture = architecture
        self.multires = architecture == "multires"
        self.pooled = architecture != "no_pooling"
        self.size_multiple = 4 if self.pooled else 1
        self.num_fields = 3 if self.multires else 1
        self.return_all = return_all
        self.flow_init_std = float(flow_init_std)
        c1, c2, c3, c4 = (int(c) for c in channels)
        d1, d2 = (int(c) for c in deconv_channels)

        def conv(cin: int, cout: int, transposed: bool = False) -> Convolution:
            stride = 2 if transposed else conv_stride
            return Convolution(spatial_dims, cin, cout, strides=stride, kernel_size=3, act="RELU", norm="BATCH",
                               is_transposed=transposed)

        def pool() -> nn.Module:
            return Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1) if self.pooled else nn.Identity()

        def reg(cin: int) -> nn.Module:
            return Conv[Conv.CONV, spatial_dims](cin, spatial_dims, kernel_size=3, padding=1)

        self.conv1, self.pool1 = conv(in_channels, c1), pool()
        self.conv2, self.pool2 = conv(c1, c2), pool()
        self.conv3 = conv(c2, c3)
        self.reg3 = reg(c3)
        self.deconv1: nn.Module = conv(c3, d1, transposed=True) if self.multires else nn.Identity()
        self.conv4: nn.Module = conv(d1, c4) if self.multires else nn.Identity()
        self.reg2: nn.Module = reg(c4) if self.multires else nn.Identity()
        self.deconv2: nn.Module = conv(c4, d2, transposed=True) if self.multires else nn.Identity()
        self.reg1: nn.Module = reg(d2) if self.multires else nn.Identity()
        self._init_regression()

    def _init_regression(self) -> None:
        for m in (self.reg1, self.reg2, self.reg3):
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, mean=0.0, std=self.flow_init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.unused
    def reset_parameters(self) -> None:
        """Re-initialise every layer as a freshly built network (near-zero regression layers)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self._init_regression()

    def forward(
        self, concatenated_pairs: torch.Tensor, return_all: Optional[bool] = None
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Args:
            concatenated_pairs: ``(B, in_channels, H, W[, D])`` moving and fixed images.
            return_all: overrides the ``return_all`` attribute for this call.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` full-resolution field, or (``return_all``) the list of
            fields finest first: full, 1/2, 1/4 resolution for ``"multires"``, the full-resolution
            field alone for the ablations.
        """
        x = concatenated_pairs
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected a (B, " + str(self.in_channels) + ", *spatial) pair with " + str(self.spatial_dims)
                + " spatial dims, got shape " + str(x.shape)
            )
        size: List[int] = [int(s) for s in x.shape[2:]]
        for s in size:
            if s % self.size_multiple != 0:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by " + str(self.size_multiple) + ".")
        quarter: List[int] = [s // 4 for s in size] if self.pooled else size
        f3 = self.conv3(self.pool2(self.conv2(self.pool1(self.conv1(x)))))
        coarsest = resize_displacement(self.reg3(f3), quarter)
        if self.multires:
            f2 = self.conv4(self.deconv1(f3))
            half = resize_displacement(self.reg2(f2), [s // 2 for s in size])
            full = resize_displacement(self.reg1(self.deconv2(f2)), size)
            fields = [full, half, coarsest]
        else:
            fields = [resize_displacement(coarsest, size)]
        want_all = self.return_all if return_all is None else return_all
        if want_all:
            return fields
        return fields[0]
