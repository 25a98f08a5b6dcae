"""Recurrent field update for iterative registration: motion encoder, ConvGRU, update block.

RAFT-style: the search map and the current field are encoded into motion features, a
convolutional GRU updates a hidden state from them (plus a per-pair context), and two
convolutions turn the hidden state into a field increment. A third head predicts the weights of
convex x2 upsampling. Dimension-generic (2D/3D); TorchScript-compatible.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

__all__ = ["ConvGRU", "MotionEncoder", "FieldUpdateBlock"]


def _conv(spatial_dims: int, cin: int, cout: int, kernel_size: int) -> nn.Module:
    return Conv[Conv.CONV, spatial_dims](cin, cout, kernel_size=kernel_size, padding=kernel_size // 2)


class ConvGRU(nn.Module):
    """Convolutional gated recurrent unit.

    ``z = sigmoid(conv_z([h, x]))``, ``r = sigmoid(conv_r([h, x]))``,
    ``q = tanh(conv_q([r * h, x]))``, ``h' = (1 - z) * h + z * q``.

    Args:
        spatial_dims: 2 or 3.
        hidden_channels: channels of the hidden state ``h``.
        input_channels: channels of the input ``x``.
        kernel_size: kernel of the three gate convolutions.
    """

    def __init__(self, spatial_dims: int, hidden_channels: int, input_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        cin = hidden_channels + input_channels
        self.convz = _conv(spatial_dims, cin, hidden_channels, kernel_size)
        self.convr = _conv(spatial_dims, cin, hidden_channels, kernel_size)
        self.convq = _conv(spatial_dims, cin, hidden_channels, kernel_size)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Args:
            h: ``(B, hidden, *S)`` hidden state.
            x: ``(B, input, *S)`` input.

        Returns:
            ``(B, hidden, *S)`` new hidden state.
        """
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class MotionEncoder(nn.Module):
    """Encode the search map and the current field into motion features (field appended).

    Args:
        spatial_dims: 2 or 3.
        search_channels: channels of the search map (``levels * K``).
        out_channels: channels of the output, the field's ``spatial_dims`` included.
    """

    def __init__(self, spatial_dims: int, search_channels: int, out_channels: int = 64) -> None:
        super().__init__()
        if out_channels <= spatial_dims:
            raise ValueError(f"out_channels must exceed spatial_dims, got {out_channels}.")
        self.convc = _conv(spatial_dims, search_channels, 64, 1)
        self.convf1 = _conv(spatial_dims, spatial_dims, 32, 3)
        self.convf2 = _conv(spatial_dims, 32, 16, 3)
        self.conv = _conv(spatial_dims, 64 + 16, out_channels - spatial_dims, 3)
        self.act = nn.ReLU()

    def forward(self, search: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """Args:
            search: ``(B, search_channels, *S)``.
            ddf: ``(B, N, *S)`` current field.

        Returns:
            ``(B, out_channels, *S)``.
        """
        c = self.act(self.convc(search))
        f = self.act(self.convf2(self.act(self.convf1(ddf))))
        return torch.cat([self.act(self.conv(torch.cat([c, f], dim=1))), ddf], dim=1)


class FieldUpdateBlock(nn.Module):
    """One iteration: motion encoder -> ConvGRU -> field increment (+ convex upsampling weights).

    Args:
        spatial_dims: 2 or 3.
        search_channels: channels of the search map.
        hidden_channels: GRU hidden state channels.
        context_channels: per-pair context channels fed to the GRU at every step (0: none).
        motion_channels: motion feature channels.
        mask_channels: channels of the convex-upsampling weight head (``3**N * 2**N``); 0 disables it.
        flow_init_std: std of the normal init of the last field convolution (bias 0), so the first
            increments are near zero.
    """

    def __init__(
        self,
        spatial_dims: int,
        search_channels: int,
        hidden_channels: int = 16,
        context_channels: int = 16,
        motion_channels: int = 64,
        mask_channels: int = 0,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        self.motion = MotionEncoder(spatial_dims, search_channels, motion_channels)
        self.gru = ConvGRU(spatial_dims, hidden_channels, motion_channels + context_channels)
        self.flow_head = nn.Sequential(
            _conv(spatial_dims, hidden_channels, 32, 3), nn.ReLU(), _conv(spatial_dims, 32, spatial_dims, 3)
        )
        last = self.flow_head[2]
        nn.init.normal_(last.weight, mean=0.0, std=float(flow_init_std))
        nn.init.zeros_(last.bias)
        self.has_mask = mask_channels > 0
        self.mask_head = (
            nn.Sequential(_conv(spatial_dims, hidden_channels, 64, 3), nn.ReLU(), _conv(spatial_dims, 64, mask_channels, 1))
            if self.has_mask
            else nn.Identity()
        )

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, search: torch.Tensor, ddf: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            hidden: ``(B, hidden, *S)``.
            context: ``(B, context, *S)`` (``context`` may be 0 channels).
            search: ``(B, search_channels, *S)``.
            ddf: ``(B, N, *S)``.

        Returns:
            new hidden state, field increment ``(B, N, *S)``, convex weights ``(B, mask, *S)``
            (an empty tensor when disabled).
        """
        motion = self.motion(search, ddf)
        hidden = self.gru(hidden, torch.cat([motion, context], dim=1))
        delta = self.flow_head(hidden)
        mask = self.mask_head(hidden) if self.has_mask else hidden.new_zeros(0)
        return hidden, delta, mask
