"""Per-pair (instance) optimisation: register one pair by optimising the network on that pair alone.

"Registering a set of images is also a training procedure" (Li & Fan): starting from a bundle's
trained weights (or from scratch), a copy of the network is optimised for a fixed number of steps
on the unsupervised loss of the one pair, and its field is returned. The bundle's own network and
weights are never modified.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn

from morphzoo.engines.registration import RegistrationInferer

__all__ = ["InstanceOptimization"]


class InstanceOptimization:
    """A ``field_fn(moving, fixed) -> ddf`` for :class:`~morphzoo.inference.Registrar` that fine-tunes
    a copy of ``network`` on the pair.

    Args:
        network: the trained pair -> field network (left untouched).
        loss: a registration loss ``loss(ddf, cat(moving, fixed))``, e.g.
            :class:`morphzoo.losses.RegistrationLoss` (unsupervised: no labels are used).
        steps: optimisation steps per pair (0 returns the network's own prediction).
        learning_rate: Adam learning rate.
        inferer: network output -> displacement field (default: no integration).
        from_scratch: re-initialise the copy's parameters first (the paper's "register a pair
            directly" mode) instead of starting from the trained weights.

    Shapes: ``moving``, ``fixed``: ``(B, 1, H, W[, D])`` normalised, on the network grid; returns
    ``(B, N, H, W[, D])``.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        steps: int = 20,
        learning_rate: float = 1e-4,
        inferer: Callable | None = None,
        from_scratch: bool = False,
    ) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        self.network = network
        self.loss = loss
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.inferer = inferer if inferer is not None else RegistrationInferer()
        self.from_scratch = from_scratch
        self.last_losses: list[float] = []

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if moving.shape != fixed.shape or moving.shape[1] != 1:
            raise ValueError(f"expected two (B, 1, *S) tensors of one shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}.")
        net = copy.deepcopy(self.network)
        if self.from_scratch:
            for m in net.modules():
                if hasattr(m, "reset_parameters") and m is not net:
                    m.reset_parameters()
        pair = torch.cat([moving, fixed], dim=1)
        self.last_losses = []
        with torch.enable_grad():
            net.train()
            opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                value = self.loss(self.inferer(pair, net), pair)
                value.backward()
                opt.step()
                self.last_losses.append(float(value.detach()))
        net.eval()
        with torch.no_grad():
            return self.inferer(pair, net)
