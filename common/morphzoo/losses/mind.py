"""MIND-SSC: the modality independent neighbourhood descriptor with self-similarity context.

Heinrich et al., "MIND: Modality independent neighbourhood descriptor for multi-modal deformable
registration", MedIA 2012, and the self-similarity-context variant of Heinrich et al., MICCAI 2013.
For every voxel ``x`` and every pair ``(p, q)`` of its ``2N`` axis neighbours at distance ``d``
(``dilation``) that are not opposite each other (12 pairs in 3D, 4 in 2D),

    D_pq(x) = box_r * (I(x + p) - I(x + q))^2          (patch distance, box filter of radius r)
    MIND_pq(x) = exp(-D_pq(x) / V(x)),  V(x) = mean_pq D_pq(x)  (local variance estimate)

normalised so that the largest channel is 1. MONAI has no such descriptor; it is the feature that
makes classical instance optimisation (e.g. ConvexAdam) robust to intensity differences between
subjects and scanners.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["mind_ssc", "MINDSSCLoss", "ssc_pairs", "mind_descriptor_distance"]


def ssc_pairs(spatial_dims: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The self-similarity-context neighbour pairs: unit axis offsets ``p != -q``, ``p < q``."""
    neigh = []
    for k in range(spatial_dims):
        for s in (-1, 1):
            o = [0] * spatial_dims
            o[k] = s
            neigh.append(tuple(o))
    return [(p, q) for p, q in itertools.combinations(neigh, 2) if any(a + b != 0 for a, b in zip(p, q))]


def _shift(x: torch.Tensor, offset: tuple[int, ...], pad: int) -> torch.Tensor:
    """``x`` sampled at ``i + offset`` (replicate padding of width ``pad``)."""
    n = x.ndim - 2
    padded = F.pad(x, [pad] * (2 * n), mode="replicate")
    idx = tuple(slice(pad + o, pad + o + s) for o, s in zip(offset, x.shape[2:]))
    return padded[(slice(None), slice(None)) + idx]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2, eps: float = 1e-12) -> torch.Tensor:
    """MIND-SSC descriptors of an image.

    Args:
        image: ``(B, 1, *S)`` with 2 or 3 spatial dims.
        radius: half-width of the box filter over patch distances.
        dilation: distance ``d`` of the neighbours.

    Returns:
        ``(B, P, *S)`` descriptors in ``(0, 1]`` (``P`` = 12 in 3D, 4 in 2D).
    """
    n = image.ndim - 2
    if n not in (2, 3) or image.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, *S) image with 2 or 3 spatial dims, got shape {tuple(image.shape)}.")
    pool = F.avg_pool2d if n == 2 else F.avg_pool3d
    dists = []
    for p, q in ssc_pairs(n):
        a = _shift(image, tuple(dilation * v for v in p), dilation)
        b = _shift(image, tuple(dilation * v for v in q), dilation)
        d = (a - b) ** 2
        if radius > 0:
            d = pool(F.pad(d, [radius] * (2 * n), mode="replicate"), kernel_size=2 * radius + 1, stride=1)
        dists.append(d)
    dist = torch.cat(dists, dim=1)
    var = dist.mean(dim=1, keepdim=True)
    mean_var = var.flatten(1).mean(dim=1).view(-1, *([1] * (n + 1)))
    var = torch.minimum(torch.maximum(var, mean_var * 1e-3), mean_var * 1e3) + eps
    mind = torch.exp(-dist / var)
    return mind / mind.amax(dim=1, keepdim=True)  # the max is >= exp(-1e3) > 0


class MINDSSCLoss(nn.Module):
    """Squared difference of the MIND-SSC descriptors of two images, summed over the descriptor
    channels and averaged over voxels (ConvexAdam's cost; 0 for identical images).

    Args:
        radius, dilation: see :func:`mind_ssc`.

    Shapes: ``pred``, ``target``: ``(B, 1, *S)``; returns a scalar.
    """

    def __init__(self, radius: int = 1, dilation: int = 2) -> None:
        super().__init__()
        self.radius, self.dilation = int(radius), int(dilation)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mind_descriptor_distance(mind_ssc(pred, self.radius, self.dilation), mind_ssc(target, self.radius, self.dilation))


def mind_descriptor_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``sum_channels (pred - target)^2`` averaged over batch and voxels, for ``(B, P, *S)`` descriptors."""
    return ((pred - target) ** 2).sum(dim=1).mean()
