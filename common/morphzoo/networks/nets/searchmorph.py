"""SearchMorph: correlation pyramid + diamond search + ConvGRU iterations (2D and 3D).

Fan X., Zhuang S., Zhuang Z., Qiu S., Raj A.N.J., Rong Y. "SearchMorph: Multi-scale correlation
iterative network for deformable registration" (paper: 2D only; the 3D version here is MorphZoo's, made
possible by the on-the-fly local correlation of :class:`~morphzoo.networks.blocks.CorrelationSearch`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from morphzoo.networks.blocks.correlation import CORRELATION_MODES, CorrelationSearch
from morphzoo.networks.blocks.field_update import FieldUpdateBlock
from morphzoo.networks.blocks.field_upsample import UPSAMPLE_MODES, ConvexUpsample, convex_mask_channels, linear_upsample2

__all__ = ["SearchMorphEncoder", "SearchMorph"]

_ACT = ("leakyrelu", {"negative_slope": 0.2})


class SearchMorphEncoder(nn.Module):
    """U-Net-like trunk shared by the feature and the context encoder, with one head each.

    Full resolution -> 1/2 -> 1/4 -> 1/8 (stride-2 convolutions), decoded with skips back to 1/2;
    every convolution is followed by batch norm + LeakyReLU(0.2). The last layers differ: the
    feature head (``2 * feature_channels``, split into ``h(F)`` then ``h(M)``) and the context head
    (``context_channels``; none when 0).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2: moving, fixed).
        channels: encoder widths at 1, 1/2, 1/4, 1/8.
        decoder_channels: decoder widths at 1/4, 1/2.
        feature_channels: channels of each of ``h(F)``, ``h(M)`` (paper: 4).
        context_channels: context channels (paper: 32; 0 for the "without context" ablation).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 2,
        channels: Sequence[int] = (16, 32, 32, 64),
        decoder_channels: Sequence[int] = (32, 32),
        feature_channels: int = 4,
        context_channels: int = 32,
    ) -> None:
        super().__init__()
        if len(channels) != 4 or len(decoder_channels) != 2:
            raise ValueError(f"need 4 encoder and 2 decoder widths, got {list(channels)} and {list(decoder_channels)}.")
        c0, c1, c2, c3 = (int(c) for c in channels)
        d2, d1 = (int(c) for c in decoder_channels)

        def block(cin: int, cout: int, stride: int = 1) -> Convolution:
            return Convolution(spatial_dims, cin, cout, strides=stride, kernel_size=3, act=_ACT, norm="BATCH")

        self.enc0, self.enc1 = block(in_channels, c0), block(c0, c1, 2)
        self.enc2, self.enc3 = block(c1, c2, 2), block(c2, c3, 2)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.dec2, self.dec1 = block(c3 + c2, d2), block(d2 + c1, d1)
        conv = Conv[Conv.CONV, spatial_dims]
        self.feature_head = conv(d1, 2 * feature_channels, kernel_size=3, padding=1)
        self.has_context = context_channels > 0
        self.context_head = conv(d1, context_channels, kernel_size=3, padding=1) if self.has_context else nn.Identity()
        self.feature_channels = feature_channels
        self.context_channels = context_channels

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            x: ``(B, in_channels, *S)``, sizes divisible by 8.

        Returns:
            ``h(F)``, ``h(M)`` ``(B, feature_channels, *S/2)`` and the context
            ``(B, context_channels, *S/2)`` (0 channels without context).
        """
        e1 = self.enc1(self.enc0(x))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        feats = self.feature_head(d1)
        ctx = self.context_head(d1) if self.has_context else d1[:, :0]
        return feats[:, : self.feature_channels], feats[:, self.feature_channels :], ctx


class _NoUpdate(nn.Module):
    """Stands in for the update block when the search module is ablated (keeps ``forward`` scriptable)."""

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, search: torch.Tensor, ddf: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return hidden, torch.zeros_like(ddf), hidden[:, :0]


class SearchMorph(nn.Module):
    """SearchMorph: a ``(moving, fixed)`` pair -> displacement field, refined by iteration.

    At 1/2 resolution: features ``h(F)``, ``h(M)`` and a context from a shared encoder; the
    correlation pyramid (``num_levels`` levels, average pooling over the moving positions); then
    ``iterations`` times: search map at ``ddf + diamond offsets`` (L1 radius ``radius``) at every
    level -> motion encoder -> ConvGRU (hidden state ``tanh`` of half the context, the other half
    ``ReLU`` fed at every step, as RAFT) -> ``ddf += delta``, starting from ``ddf = 0``. The field is
    finally upsampled x2 (convex, RAFT, or linear; values x2). As in RAFT, the lookup position and
    the field fed to the motion encoder are detached; the sum of increments keeps its gradient.

    The paper's ablations are switches: ``use_context=False`` (hidden state starts at 0, no
    context input), ``use_search=False`` (no correlation: a field is regressed directly from the
    features and context at 1/2 resolution and upsampled linearly), ``num_levels=1`` (no pyramid),
    ``iterations=1`` (no iteration). ``correlation="all_pairs"`` builds the paper's full volume;
    the default ``"local"`` computes only the searched offsets and gives the same numbers.

    Displacements are in voxels, channel order = array-axis order (MONAI ``Warp`` convention,
    ``warped(x) = moving(x + ddf(x))``), so the correlation is ``<h(F)(x), h(M)(x + ddf(x) + delta)>``.

    Args:
        spatial_dims: 2 or 3 (3D is beyond the paper; use ``correlation="local"``).
        in_channels: input channels (2: moving, fixed).
        radius: L1 search radius (paper: 3 for MRI, 2 for ultrasound).
        num_levels: correlation pyramid levels (paper: 4).
        iterations: GRU iterations (paper: 4).
        channels: encoder widths at 1, 1/2, 1/4, 1/8.
        decoder_channels: decoder widths at 1/4, 1/2.
        feature_channels: channels of ``h(F)`` and of ``h(M)`` (paper: 4 each).
        context_channels: context channels, split into hidden-state and per-step halves (paper: 32).
        motion_channels: motion-encoder output channels.
        upsample: ``"convex"`` or ``"linear"``.
        correlation: ``"local"`` or ``"all_pairs"``.
        use_context: False for the "without context" ablation.
        use_search: False for the "without search module" ablation.
        return_all: return the full-resolution field of every iteration (last first) instead of
            the last; per call via ``forward(x, return_all=True)`` or as an attribute.
        flow_init_std: std of the normal init of the field-regressing convolutions.

    Raises:
        ValueError: on a bad switch value, or an input that is not ``(B, in_channels, *S)`` with
            every spatial size divisible by 8.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        radius: int = 3,
        num_levels: int = 4,
        iterations: int = 4,
        channels: Sequence[int] = (16, 32, 32, 64),
        decoder_channels: Sequence[int] = (32, 32),
        feature_channels: int = 4,
        context_channels: int = 32,
        motion_channels: int = 64,
        upsample: str = "convex",
        correlation: str = "local",
        use_context: bool = True,
        use_search: bool = True,
        return_all: bool = False,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}.")
        if correlation not in CORRELATION_MODES:
            raise ValueError(f"correlation must be one of {CORRELATION_MODES}, got {correlation!r}.")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}.")
        if use_context and (context_channels < 2 or context_channels % 2):
            raise ValueError(f"context_channels must be even and >= 2 with a context, got {context_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.iterations = int(iterations) if use_search else 1
        self.use_context = use_context
        self.use_search = use_search
        self.return_all = return_all
        self.size_multiple = 8
        self.hidden_channels = context_channels // 2 if use_context else 16
        ctx = context_channels if use_context else 0
        self.encoder = SearchMorphEncoder(spatial_dims, in_channels, channels, decoder_channels, feature_channels, ctx)
        self.search = CorrelationSearch(spatial_dims, radius, num_levels, correlation)
        self.convex = use_search and upsample == "convex"
        conv = Conv[Conv.CONV, spatial_dims]
        if use_search:
            self.update = FieldUpdateBlock(
                spatial_dims,
                self.search.out_channels,
                hidden_channels=self.hidden_channels,
                context_channels=ctx - self.hidden_channels if use_context else 0,
                motion_channels=motion_channels,
                mask_channels=convex_mask_channels(spatial_dims) if self.convex else 0,
                flow_init_std=flow_init_std,
            )
            self.direct: nn.Module = nn.Identity()
        else:
            self.update = _NoUpdate()  # type: ignore[assignment]
            self.direct = nn.Sequential(
                Convolution(spatial_dims, 2 * feature_channels + ctx, 32, kernel_size=3, act=_ACT, norm=None),
                conv(32, spatial_dims, kernel_size=3, padding=1),
            )
            nn.init.normal_(self.direct[1].weight, mean=0.0, std=float(flow_init_std))
            nn.init.zeros_(self.direct[1].bias)
        self.upsampler = ConvexUpsample(spatial_dims)

    def _upsample(self, ddf: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.convex:
            return self.upsampler(ddf, mask)
        return linear_upsample2(ddf)

    def forward(
        self, concatenated_pairs: torch.Tensor, return_all: Optional[bool] = None
    ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Args:
            concatenated_pairs: ``(B, in_channels, H, W[, D])`` moving and fixed images.
            return_all: overrides the ``return_all`` attribute for this call.

        Returns:
            ``(B, spatial_dims, H, W[, D])`` field after the last iteration, or (``return_all``) the
            list of every iteration's field, last iteration first.
        """
        x = concatenated_pairs
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected a (B, " + str(self.in_channels) + ", *spatial) pair with " + str(self.spatial_dims)
                + " spatial dims, got shape " + str(x.shape)
            )
        for s in x.shape[2:]:
            if int(s) % self.size_multiple != 0:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by " + str(self.size_multiple) + ".")
        want_all = self.return_all if return_all is None else return_all
        h_fixed, h_moving, context = self.encoder(x)
        if not self.use_search:
            direct = linear_upsample2(self.direct(torch.cat([h_fixed, h_moving, context], dim=1)))
            if want_all:
                return [direct]
            return direct
        half: List[int] = [int(s) for s in h_fixed.shape[2:]]
        b = int(x.shape[0])
        if self.use_context:
            hidden = torch.tanh(context[:, : self.hidden_channels])
            step_input = torch.relu(context[:, self.hidden_channels :])
        else:
            hidden = x.new_zeros([b, self.hidden_channels] + half)
            step_input = context
        pyramid = self.search.pyramid(h_fixed, h_moving)
        ddf = x.new_zeros([b, self.spatial_dims] + half)
        fields: List[torch.Tensor] = []
        for t in range(self.iterations):
            current = ddf.detach()
            smap = self.search.lookup(pyramid, h_fixed, current)
            hidden, delta, mask = self.update(hidden, step_input, smap, current)
            ddf = ddf + delta
            if want_all or t == self.iterations - 1:
                fields.append(self._upsample(ddf, mask))
        fields.reverse()
        if want_all:
            return fields
        return fields[0]
