"""Composite unsupervised (and optionally label-supervised) registration loss from ``monai.losses``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import (
    BendingEnergyLoss,
    DiceLoss,
    DiffusionLoss,
    GlobalMutualInformationLoss,
    LocalNormalizedCrossCorrelationLoss,
    SSIMLoss,
)
from monai.networks.blocks import Warp

from morphzoo.losses.mind import MINDSSCLoss
from morphzoo.metrics.similarity import ncc_global

__all__ = [
    "RegistrationLoss",
    "GlobalNCCLoss",
    "TotalVariationLoss",
    "make_image_loss",
    "make_regularizer",
    "split_targets",
]


class GlobalNCCLoss(nn.Module):
    """``-NCC(pred, target)``: the negated global (zero-normalised) cross-correlation of each batch
    item over all its channels and voxels (:func:`morphzoo.metrics.ncc_global`), averaged over the
    batch. -1 for identical images; Li & Fan's similarity term.

    Shapes: ``pred``, ``target``: ``(B, C, H, W[, D])``; returns a scalar.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -ncc_global(pred, target).mean()


class TotalVariationLoss(nn.Module):
    """Total variation (L1 norm of the gradient) of a displacement field, Li & Fan's Eq. (2).

    ``sum_j mean_{b, c, x} |D_c(x + e_j) - D_c(x)|`` with forward differences along every spatial
    axis ``j``: the per-voxel ``||grad D||_1`` averaged over voxels and (like MONAI's
    ``DiffusionLoss``) over field components. 0 for a constant field; ``sum_j mean_c |a_cj|`` for
    the linear field ``D_c(x) = sum_j a_cj x_j``.

    Shapes: ``ddf``: ``(B, N, H, W[, D])`` with ``N`` = number of spatial dims; returns a scalar.
    """

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        if ddf.ndim not in (4, 5) or ddf.shape[1] != ddf.ndim - 2:
            raise ValueError(f"expected a (B, N, *S) field with N spatial dims, got shape {tuple(ddf.shape)}.")
        total = torch.zeros((), dtype=ddf.dtype, device=ddf.device)
        for axis in range(2, ddf.ndim):
            if ddf.shape[axis] > 1:
                total = total + torch.diff(ddf, dim=axis).abs().mean()
        return total


def make_image_loss(name: str, spatial_dims: int, kernel_size: int = 9, num_bins: int = 23) -> nn.Module:
    """Image dissimilarity by name: ``"lncc"``, ``"ncc"`` (global, :class:`GlobalNCCLoss`), ``"mse"``,
    ``"mi"`` (global mutual information), ``"ssim"`` or ``"mind"`` (MIND-SSC descriptors,
    :class:`~morphzoo.losses.mind.MINDSSCLoss`)."""
    name = name.lower()
    if name == "mind":
        return MINDSSCLoss()
    if name == "ncc":
        return GlobalNCCLoss()
    if name == "lncc":
        return LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, kernel_size=kernel_size, kernel_type="rectangular")
    if name == "mse":
        return nn.MSELoss()
    if name == "mi":
        return GlobalMutualInformationLoss(num_bins=num_bins)
    if name == "ssim":
        return SSIMLoss(spatial_dims=spatial_dims, data_range=1.0)
    raise ValueError(f"unknown image loss {name!r}; expected 'lncc', 'ncc', 'mse', 'mi', 'ssim' or 'mind'.")


def make_regularizer(name: str) -> nn.Module:
    """Field regulariser by name: ``"diffusion"`` (squared gradient), ``"bending"`` (bending energy) or
    ``"tv"`` (total variation, L1 gradient: :class:`TotalVariationLoss`)."""
    name = name.lower()
    if name == "tv":
        return TotalVariationLoss()
    if name == "diffusion":
        return DiffusionLoss()
    if name == "bending":
        return BendingEnergyLoss()
    raise ValueError(f"unknown regularizer {name!r}; expected 'diffusion', 'bending' or 'tv'.")


def split_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Split the ``(B, 2 or 4, *S)`` target tensor built by
    :class:`morphzoo.engines.RegistrationPrepareBatch` into moving, fixed, moving label, fixed label."""
    if targets.ndim < 4 or targets.shape[1] not in (2, 4):
        raise ValueError(f"targets must have shape (B, 2 or 4, *S), got {tuple(targets.shape)}.")
    mov, fix = targets[:, 0:1], targets[:, 1:2]
    if targets.shape[1] == 4:
        return mov, fix, targets[:, 2:3], targets[:, 3:4]
    return mov, fix, None, None


class RegistrationLoss(nn.Module):
    """``image_weight * sim(fixed, moving∘φ) + reg_weight * R(φ) [+ label_weight * Dice(fixed_label, moving_label∘φ)]``.

    The label term (VoxelMorph's semi-supervised mode) warps the one-hot moving label linearly and
    is off by default (``label_weight=0``), so training stays unsupervised. Multi-output networks
    may pass a list of fields (finest first) with ``scale_weights``; each coarser field is compared
    with images (and one-hot labels) average-pooled to its size, and a scale of weight 0 is skipped.

    Args:
        spatial_dims: 2 or 3.
        image_loss: ``"lncc"``, ``"ncc"``, ``"mse"``, ``"mi"`` or ``"ssim"``.
        regularizer: ``"diffusion"``, ``"bending"`` or ``"tv"``.
        reg_weight: weight of the regulariser.
        label_weight: weight of the Dice term on warped labels (0 = unsupervised).
        num_labels: number of label classes including background (for the Dice term).
        kernel_size: LNCC window.
        scale_weights: weights for a list of fields (finest first).
        image_weight: weight of the image term (e.g. small for a label-driven affine network).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        image_loss: str = "lncc",
        regularizer: str = "diffusion",
        reg_weight: float = 1.0,
        label_weight: float = 0.0,
        num_labels: int = 2,
        kernel_size: int = 9,
        scale_weights: Sequence[float] | None = None,
        image_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.image_loss = make_image_loss(image_loss, spatial_dims, kernel_size)
        self.regularizer = make_regularizer(regularizer)
        self.reg_weight = float(reg_weight)
        self.label_weight = float(label_weight)
        self.image_weight = float(image_weight)
        self.num_labels = int(num_labels)
        self.scale_weights = None if scale_weights is None else [float(w) for w in scale_weights]
        self.warp = Warp(mode="bilinear", padding_mode="border")
        self.dice = DiceLoss(include_background=False, reduction="mean")
        self.last_terms: dict[str, float] = {}

    def _single(self, ddf: torch.Tensor, mov, fix, mlab, flab) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = tuple(ddf.shape[2:])
        pool = F.adaptive_avg_pool3d if self.spatial_dims == 3 else F.adaptive_avg_pool2d
        use_labels = self.label_weight > 0 and mlab is not None and flab is not None
        if use_labels:
            mlab = F.one_hot(mlab[:, 0].long(), self.num_labels).movedim(-1, 1).float()
            flab = F.one_hot(flab[:, 0].long(), self.num_labels).movedim(-1, 1).float()
        if tuple(mov.shape[2:]) != size:
            mov, fix = pool(mov, size), pool(fix, size)
            if use_labels:  # soft label maps on the coarser grid
                mlab, flab = pool(mlab, size), pool(flab, size)
        warped = self.warp(mov, ddf)
        terms = {"similarity": self.image_loss(warped, fix), "regularization": self.regularizer(ddf)}
        total = self.image_weight * terms["similarity"] + self.reg_weight * terms["regularization"]
        if use_labels:
            terms["label_dice"] = self.dice(self.warp(mlab, ddf), flab)
            total = total + self.label_weight * terms["label_dice"]
        return total, terms

    def forward(self, ddf: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Args:
            ddf: ``(B, N, *S)`` displacement field, or a list of them (finest first).
            targets: ``(B, 2 or 4, *S)``: moving, fixed[, moving label, fixed label].
        """
        mov, fix, mlab, flab = split_targets(targets)
        fields = list(ddf) if isinstance(ddf, (list, tuple)) else [ddf]
        for f in fields:
            if f.shape[1] != self.spatial_dims:
                raise ValueError(f"field has {f.shape[1]} channels, expected spatial_dims={self.spatial_dims}: {tuple(f.shape)}.")
        weights = self.scale_weights or [1.0] * len(fields)
        if len(weights) != len(fields):
            raise ValueError(f"{len(fields)} fields but {len(weights)} scale_weights.")
        total = torch.zeros((), device=mov.device)
        logged: dict[str, float] = {}
        for w, f in zip(weights, fields):
            if w == 0.0:  # a scale switched off (e.g. a coarser stage while a finer one trains)
                continue
            loss, terms = self._single(f, mov, fix, mlab, flab)
            total = total + w * loss
            if not logged:  # the terms of the finest scale that counts
                logged = {n: float(v.detach()) for n, v in terms.items()}
        self.last_terms = logged
        return total
