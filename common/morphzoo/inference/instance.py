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
            directly" mode) instead of starting from the trained weights; a network's own
            ``reset_parameters()`` is used when it defines one, else every layer's.
        return_all: optimise the loss on all the network's fields (deep supervision): the copy's
            ``return_all`` attribute is switched on during the optimisation, so ``inferer`` must
            pass lists through (``RegistrationInferer(return_all=True)``) and ``loss`` accept them
            (``RegistrationLoss(scale_weights=...)``); the returned field is the final one.

    Batch-norm layers of the optimised copy keep normalising with the pair's own statistics for
    the returned field (the forward pass whose loss was minimised); with ``steps=0`` the field is
    the network's own eval-mode prediction.

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
        return_all: bool = False,
    ) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        self.network = network
        self.loss = loss
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.inferer = inferer if inferer is not None else RegistrationInferer()
        self.from_scratch = from_scratch
        self.return_all = return_all
        if return_all and not hasattr(network, "return_all"):
            raise ValueError(f"return_all=True needs a network with a `return_all` attribute; {type(network).__name__} has none.")
        self.last_losses: list[float] = []

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if moving.shape != fixed.shape or moving.shape[1] != 1:
            raise ValueError(f"expected two (B, 1, *S) tensors of one shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}.")
        net = copy.deepcopy(self.network)
        if self.from_scratch:
            if callable(getattr(net, "reset_parameters", None)):
                net.reset_parameters()
            else:
                for m in net.modules():
                    if hasattr(m, "reset_parameters") and m is not net:
                        m.reset_parameters()
        if self.return_all:
            net.return_all = True
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
        if self.return_all:
            net.return_all = False
        if self.steps > 0:  # the optimised forward pass: batch norm with the pair's statistics
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        with torch.no_grad():
            out = self.inferer(pair, net)
        return out[0] if isinstance(out, (list, tuple)) else out
