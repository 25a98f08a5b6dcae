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
)
from monai.networks.blocks import Warp

from morphzoo.losses.mind import MINDSSCLoss
from morphzoo.metrics.similarity import ncc_global

__all__ = [
    "RegistrationLoss",
    "GlobalNCCLoss",
    "TotalVariationLoss",
    "WeightedSumLoss",
    "SeparableSSIMLoss",
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


class WeightedSumLoss(nn.Module):
    """``Σ_k w_k · loss_k(pred, target)``: a weighted sum of image losses (e.g. FMIRNet's
    ``MSE + β·(1 − SSIM)``, built by :func:`make_image_loss` from ``"mse+1*ssim"``).

    Args:
        terms: ``(weight, loss)`` pairs; each loss maps ``(pred, target)`` to a scalar.
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSumLoss needs at least one term.")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList([loss for _, loss in terms])

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=pred.device, dtype=pred.dtype)
        for w, loss in zip(self.weights, self.losses):
            total = total + w * loss(pred, target)
        return total


class SeparableSSIMLoss(nn.Module):
    """``1 − SSIM`` with the Gaussian window applied one axis at a time: the numbers of MONAI's
    ``SSIMLoss(spatial_dims, data_range)`` (11-tap Gaussian, σ = 1.5, valid windows, k1 = 0.01,
    k2 = 0.03, batch mean), at ``3·11`` instead of ``11**3`` multiplications per voxel in 3D (MONAI
    convolves with the full N-D kernel), which makes it the cheaper loss in a training step.

    Args:
        spatial_dims: 2 or 3.
        data_range: intensity range of the images.
        kernel_size: Gaussian window length.
        kernel_sigma: Gaussian window std.
        k1: luminance stability constant.
        k2: contrast stability constant.

    Shapes:
        ``pred``, ``target``: ``(B, C, *S)`` with every ``S`` at least ``kernel_size`` -> scalar.
    """

    def __init__(
        self,
        spatial_dims: int,
        data_range: float = 1.0,
        kernel_size: int = 11,
        kernel_sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        dist = torch.arange((1 - kernel_size) / 2, (1 + kernel_size) / 2, 1.0)
        gauss = torch.exp(-((dist / kernel_sigma) ** 2) / 2)
        self.register_buffer("window", gauss / gauss.sum(), persistent=False)
        self.c1 = (k1 * data_range) ** 2
        self.c2 = (k2 * data_range) ** 2

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv3d if self.spatial_dims == 3 else F.conv2d
        channels = x.shape[1]
        for axis in range(self.spatial_dims):
            shape = [1, 1] + [1] * self.spatial_dims
            shape[2 + axis] = self.window.numel()
            kernel = self.window.to(x).view(shape).expand([channels] + shape[1:])
            x = conv(x, kernel, groups=channels)
        return x

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}.")
        c = pred.shape[1]
        stats = self._blur(torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1))
        mu_x, mu_y, mu_xx, mu_yy, mu_xy = torch.split(stats, c, dim=1)
        sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
        cs = (2 * sigma_xy + self.c2) / (sigma_x + sigma_y + self.c2)
        ssim = (2 * mu_x * mu_y + self.c1) / (mu_x**2 + mu_y**2 + self.c1) * cs
        return 1 - ssim.flatten(1).mean(1).mean()


class PerSampleSum(nn.Module):
    """A field regulariser summed over voxels and components, averaged over the batch.

    The gradient penalties of ``monai.losses`` average over every element by default; papers
    whose weights are tiny (FMIRNet: α = 1e-5 for ultrasound, 1e-7 for CT) sum it, which makes
    the weight depend on the grid size. ``PerSampleSum(DiffusionLoss(reduction="sum"))(ddf)``
    = ``DiffusionLoss()(ddf) · C · N'`` for ``C`` components and ``N'`` interior voxels.

    Args:
        loss: a regulariser built with ``reduction="sum"``.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        return self.loss(ddf) / ddf.shape[0]


def _single_image_loss(name: str, spatial_dims: int, kernel_size: int, num_bins: int) -> nn.Module:
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
        return SeparableSSIMLoss(spatial_dims=spatial_dims, data_range=1.0)
    raise ValueError(f"unknown image loss {name!r}; expected 'lncc', 'ncc', 'mse', 'mi', 'ssim' or 'mind'.")


def make_image_loss(name: str, spatial_dims: int, kernel_size: int = 9, num_bins: int = 23) -> nn.Module:
    """Image dissimilarity by name: ``"lncc"``, ``"ncc"`` (global, :class:`GlobalNCCLoss`), ``"mse"``,
    ``"mi"`` (global mutual information), ``"ssim"`` (``1 − SSIM``, :class:`SeparableSSIMLoss`, MONAI's
    ``SSIMLoss`` numbers) or ``"mind"`` (MIND-SSC
    descriptors, :class:`~morphzoo.losses.mind.MINDSSCLoss`), or a weighted sum of them written
    ``"mse+0.1*ssim"`` (a :class:`WeightedSumLoss`; a term without ``w*`` has weight 1)."""
    name = name.lower().replace(" ", "")
    if "+" not in name and "*" not in name:
        return _single_image_loss(name, spatial_dims, kernel_size, num_bins)
    terms: list[tuple[float, nn.Module]] = []
    for part in name.split("+"):
        weight, _, term = part.rpartition("*")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"image loss {name!r}: weight {weight!r} of term {part!r} is not a number.") from None
        terms.append((w, _single_image_loss(term, spatial_dims, kernel_size, num_bins)))
    return WeightedSumLoss(terms)


def make_regularizer(name: str) -> nn.Module:
    """Field regulariser by name: ``"diffusion"`` (squared gradient), ``"bending"`` (bending energy) or
    ``"tv"`` (total variation, L1 gradient: :class:`TotalVariationLoss`), each averaged over every
    element; ``"diffusion_sum"`` / ``"bending_sum"`` sum over voxels and components and average over
    the batch (:class:`PerSampleSum`), the convention of papers with tiny weights."""
    name = name.lower()
    if name == "tv":
        return TotalVariationLoss()
    if name == "diffusion":
        return DiffusionLoss()
    if name == "bending":
        return BendingEnergyLoss()
    if name == "diffusion_sum":
        return PerSampleSum(DiffusionLoss(reduction="sum"))
    if name == "bending_sum":
        return PerSampleSum(BendingEnergyLoss(reduction="sum"))
    raise ValueError(f"unknown regularizer {name!r}; expected 'diffusion', 'bending', 'tv', 'diffusion_sum' or 'bending_sum'.")


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
