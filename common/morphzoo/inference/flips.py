"""Test-time augmentation by flips, as a MONAI inferer (so MONAI Label runs it as the bundle does)."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import torch
from monai.inferers import Inferer, SimpleInferer

__all__ = ["FlipInferer"]


class FlipInferer(Inferer):
    """Average a segmentation network's class probabilities over flips of the input.

    The input is run as it is and flipped along every non-empty subset of ``spatial_axes``
    (2D, both axes: 4 passes in one batch); each output is flipped back, its softmax taken and
    the probabilities averaged. The result is returned as log-probabilities, so the bundle's
    ``Activationsd(softmax=True)`` turns it into the averaged probabilities unchanged.

    Args:
        spatial_axes: spatial axes to flip (0: the first spatial axis). Empty: one plain pass
            (still returned as log-probabilities).
        inferer: the inferer each pass goes through (default :class:`~monai.inferers.SimpleInferer`).
        eps: floor of the averaged probabilities before the log.

    Shapes:
        ``inputs`` ``(B, C, *S)`` -> ``(B, num_classes, *S)``.
    """

    def __init__(self, spatial_axes: Sequence[int] = (0, 1), inferer: Inferer | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        axes = [int(a) for a in spatial_axes]
        if any(a < 0 for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"spatial_axes must be distinct non-negative axes, got {list(spatial_axes)}.")
        self.spatial_axes = axes
        self.inferer = inferer or SimpleInferer()
        self.eps = float(eps)

    def flips(self) -> list[tuple[int, ...]]:
        """The flips applied, as tuples of spatial axes (the first, ``()``, is no flip)."""
        return [c for r in range(len(self.spatial_axes) + 1) for c in itertools.combinations(self.spatial_axes, r)]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        nsp = inputs.ndim - 2
        if any(a >= nsp for a in self.spatial_axes):
            raise ValueError(f"FlipInferer: spatial_axes {self.spatial_axes} do not fit an input of shape {tuple(inputs.shape)} ({nsp} spatial axes).")
        flips = self.flips()
        batch = torch.cat([inputs.flip([2 + a for a in f]) if f else inputs for f in flips], dim=0)
        out = self.inferer(batch, network, *args, **kwargs)
        probs = torch.softmax(torch.as_tensor(out).float(), dim=1)
        b = inputs.shape[0]
        mean = sum(probs[k * b : (k + 1) * b].flip([2 + a for a in f]) if f else probs[k * b : (k + 1) * b] for k, f in enumerate(flips))
        return torch.log(torch.clamp(mean / len(flips), min=self.eps))
