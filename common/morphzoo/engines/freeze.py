"""Stage-wise training: keep some of a network's parameters fixed while the rest train."""

from __future__ import annotations

import logging
from typing import Sequence

import torch.nn as nn
from ignite.engine import Engine

__all__ = ["FreezeParameters"]

logger = logging.getLogger(__name__)


class FreezeParameters:
    """Freeze the parameters of ``network`` whose names start with one of ``prefixes``.

    On attachment the matching parameters get ``requires_grad = False`` (autograd computes no
    gradient for them, so optimisers such as Adam leave them untouched), and the modules under the
    prefixes switch themselves to eval mode before each of their forward passes
    (``SupervisedTrainer`` calls ``network.train()`` inside every iteration, which would otherwise
    update frozen batch-norm statistics or apply dropout).
    With no prefixes it does nothing, so a config can always attach it.

    Args:
        network: the trained network.
        prefixes: parameter-name prefixes, e.g. ``["stages.0.", "stages.1."]``.

    Raises:
        ValueError: if a prefix matches no parameter (a typo would silently train everything).
    """

    def __init__(self, network: nn.Module, prefixes: Sequence[str] = ()) -> None:
        self.network = network
        self.prefixes = tuple(str(p) for p in prefixes)
        names = [n for n, _ in network.named_parameters()]
        unmatched = [p for p in self.prefixes if not any(n.startswith(p) for n in names)]
        if unmatched:
            raise ValueError(f"no parameter of {type(network).__name__} starts with {unmatched} (names look like {names[:3]}).")
        self.frozen_modules = [m for n, m in network.named_modules() if n and any((n + ".").startswith(p) for p in self.prefixes)]

    def freeze(self) -> int:
        """Freeze now; returns the number of frozen parameter values."""
        count = 0
        for name, p in self.network.named_parameters():
            if any(name.startswith(pre) for pre in self.prefixes):
                p.requires_grad_(False)
                count += p.numel()
        return count

    @staticmethod
    def _to_eval(module: nn.Module, args: object) -> None:
        module.train(False)

    def attach(self, engine: Engine) -> "FreezeParameters":
        if not self.prefixes:
            return self
        count = self.freeze()
        total = sum(p.numel() for p in self.network.parameters())
        logger.info(f"frozen: {count:,} of {total:,} parameters ({', '.join(self.prefixes)})")
        for m in self.frozen_modules:
            m.register_forward_pre_hook(self._to_eval)
        return self
