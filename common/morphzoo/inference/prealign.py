"""Pre-alignment stages: a global (rigid / similarity / affine) map found before the deformable network.

Every stage is a callable ``stage(moving, fixed) -> theta`` on ``(B, 1, *S)`` normalised images of
one grid, returning ``(B, N, N + 1)`` normalised affines fixed -> moving (see
:mod:`morphzoo.transforms.affine`). Stages never see labels.

- :class:`OptimAffine`: optimisation-based registration in torch: a centre-of-mass or moments
  start, then Adam on the transform parameters over an image pyramid (NCC, LNCC, MI or MSE),
  batched, on the images' device.
- :class:`NetAffine`: a trained :class:`~morphzoo.networks.nets.AffineNet` (one forward pass),
  optionally polished by an :class:`OptimAffine` started from its answer.
- :func:`make_prealign`: the stage named by a bundle config's ``prealign`` key
  (``none | opt | net | net+opt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from morphzoo.losses.registration import make_image_loss
from morphzoo.transforms.affine import (
    TRANSFORM_MODES,
    centred_affine,
    compose_thetas,
    identity_theta,
    num_affine_params,
    resample_affine,
    theta_from_voxel,
)

__all__ = ["OptimAffine", "NetAffine", "make_prealign", "PREALIGN_MODES", "image_moments"]

PREALIGN_MODES = ("none", "opt", "net", "net+opt")


def image_moments(image: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass and second central moments of non-negative images, in voxel indices.

    Args:
        image: ``(B, 1, *S)`` non-negative weights (e.g. normalised intensities).

    Returns:
        ``centre`` ``(B, N)`` and ``covariance`` ``(B, N, N)``.
    """
    n = image.ndim - 2
    w = image[:, 0].clamp_min(0).reshape(image.shape[0], -1)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(eps)
    axes = [torch.arange(s, dtype=image.dtype, device=image.device) for s in image.shape[2:]]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(n, -1)  # (N, P)
    centre = w @ grid.T  # (B, N)
    d = grid[None] - centre[:, :, None]  # (B, N, P)
    cov = torch.einsum("bip,bjp,bp->bij", d, d, w)
    return centre, cov


def _moments_init(moving: torch.Tensor, fixed: torch.Tensor, mode: str, init: str) -> torch.Tensor:
    """Voxel affine fixed -> moving from image moments: centres matched (``"com"``), and for
    ``"moments"`` also the spread: an isotropic scale (similarity) or ``C_m^{1/2} C_f^{-1/2}``
    (affine; rotation left to the optimiser)."""
    n = moving.ndim - 2
    cm, covm = image_moments(moving)
    cf, covf = image_moments(fixed)
    b = moving.shape[0]
    lin = torch.eye(n, dtype=moving.dtype, device=moving.device).expand(b, n, n).clone()
    if init == "moments" and mode in ("similarity", "affine"):
        if mode == "similarity":
            s = (torch.linalg.det(covm).clamp_min(1e-12) / torch.linalg.det(covf).clamp_min(1e-12)) ** (0.5 / n)
            lin = lin * s[:, None, None]
        else:
            def sqrtm(c: torch.Tensor, inv: bool = False) -> torch.Tensor:
                evals, evecs = torch.linalg.eigh(c)
                evals = evals.clamp_min(1e-8) ** (-0.5 if inv else 0.5)
                return evecs @ torch.diag_embed(evals) @ evecs.transpose(1, 2)

            lin = sqrtm(covm) @ sqrtm(covf, inv=True)
    offset = cm - torch.einsum("bij,bj->bi", lin, cf)
    return torch.cat([lin, offset[:, :, None]], dim=2)


class OptimAffine:
    """Optimisation-based global registration, batched, on the images' device.

    Coarse to fine over ``levels`` (down-sampling factors), Adam minimises
    ``image_loss(moving ∘ A, fixed)`` over the parameters of a ``transform`` about the grid centre
    (:func:`~morphzoo.transforms.affine.centred_affine`; translations are scaled by half the grid
    extent so every parameter is of order 1), composed after a start found from image moments.

    Args:
        spatial_dims: 2 or 3.
        transform: ``"translation"``, ``"rigid"``, ``"similarity"`` or ``"affine"``.
        image_loss: ``"ncc"`` (global), ``"lncc"``, ``"mi"`` or ``"mse"`` (see
            :func:`morphzoo.losses.make_image_loss`).
        levels: down-sampling factors, coarse first (e.g. ``(4, 2, 1)``).
        iterations: Adam steps per level (one int for every level, or one per level).
        learning_rate: Adam learning rate.
        init: ``"identity"``, ``"com"`` (centres of mass matched) or ``"moments"`` (also the spread).
        kernel_size: LNCC window.

    Shapes: ``moving``, ``fixed`` ``(B, 1, *S)`` normalised; ``init_theta`` ``(B, N, N + 1)``;
    returns ``(B, N, N + 1)`` normalised affines.
    """

    def __init__(
        self,
        spatial_dims: int,
        transform: str = "affine",
        image_loss: str = "ncc",
        levels: Sequence[int] = (4, 2, 1),
        iterations: int | Sequence[int] = (100, 60, 30),
        learning_rate: float = 0.02,
        init: str = "com",
        kernel_size: int = 7,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if transform not in TRANSFORM_MODES:
            raise ValueError(f"transform must be one of {TRANSFORM_MODES}, got {transform!r}.")
        if init not in ("identity", "com", "moments"):
            raise ValueError(f"init must be 'identity', 'com' or 'moments', got {init!r}.")
        self.spatial_dims = spatial_dims
        self.transform = transform
        self.levels = [int(f) for f in levels]
        its = [int(iterations)] * len(self.levels) if isinstance(iterations, int) else [int(i) for i in iterations]
        if len(its) != len(self.levels):
            raise ValueError(f"{len(self.levels)} levels but {len(its)} iteration counts.")
        self.iterations = its
        self.learning_rate = float(learning_rate)
        self.init = init
        self.loss = make_image_loss(image_loss, spatial_dims, kernel_size)
        self.last_losses: list[float] = []

    def _pool(self, x: torch.Tensor, f: int) -> torch.Tensor:
        if f == 1:
            return x
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        return pool(x, kernel_size=f, stride=f, ceil_mode=True)

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor, init_theta: torch.Tensor | None = None) -> torch.Tensor:
        if moving.shape != fixed.shape or moving.ndim != self.spatial_dims + 2 or moving.shape[1] != 1:
            raise ValueError(
                f"expected moving and fixed of one shape (B, 1, *S) with {self.spatial_dims} spatial dims, "
                f"got {tuple(moving.shape)} and {tuple(fixed.shape)}."
            )
        moving, fixed = moving.detach().float(), fixed.detach().float()
        size = tuple(moving.shape[2:])
        b, n = moving.shape[0], self.spatial_dims
        if init_theta is None:
            if self.init == "identity":
                init_theta = identity_theta(b, n, moving.dtype, moving.device)
            else:
                init_theta = theta_from_voxel(_moments_init(moving, fixed, self.transform, self.init), size)
        init_theta = init_theta.detach().to(moving.dtype)
        half = torch.tensor([max(s - 1, 1) / 2.0 for s in size], dtype=moving.dtype, device=moving.device)
        params = torch.zeros(b, num_affine_params(self.transform, n), dtype=moving.dtype, device=moving.device, requires_grad=True)

        def theta_of(p: torch.Tensor) -> torch.Tensor:
            scaled = torch.cat([p[:, :n] * half, p[:, n:]], dim=1)
            return compose_thetas(init_theta, centred_affine(scaled, self.transform, size))

        opt = torch.optim.Adam([params], lr=self.learning_rate)
        self.last_losses = []
        with torch.enable_grad():
            for f, its in zip(self.levels, self.iterations):
                mov_l, fix_l = self._pool(moving, f), self._pool(fixed, f)
                size_l = tuple(fix_l.shape[2:])
                for _ in range(its):
                    opt.zero_grad(set_to_none=True)
                    value = self.loss(resample_affine(mov_l, theta_of(params), size_l), fix_l)
                    value.backward()
                    opt.step()
                    self.last_losses.append(float(value.detach()))
        return theta_of(params).detach()


class NetAffine:
    """A trained affine network as a pre-alignment stage, optionally polished by optimisation.

    Args:
        network: pair ``(B, 2, *S)`` -> ``theta`` (a :class:`~morphzoo.networks.nets.AffineNet`).
        checkpoint: a state dict file to load into ``network`` (``None``: use it as it is).
        device: where it runs (default: the network's).
        polish: an :class:`OptimAffine` started from the network's answer (``"net+opt"``).
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        polish: OptimAffine | None = None,
    ) -> None:
        if checkpoint is not None:
            p = Path(checkpoint)
            if not p.is_file():
                raise FileNotFoundError(
                    f"{p}: affine pre-alignment weights not found. Train them (configs/train_affine.json) "
                    "or run with --prealign none|opt."
                )
            state = torch.load(p, map_location="cpu", weights_only=True)
            network.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
        if device is not None:
            network = network.to(device)
        self.network = network.eval()
        self.polish = polish

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            theta = self.network(torch.cat([moving, fixed], dim=1)).float()
        if self.polish is not None:
            theta = self.polish(moving, fixed, init_theta=theta)
        return theta


def make_prealign(
    mode: str,
    network: nn.Module | None = None,
    checkpoint: str | Path | None = None,
    optim: OptimAffine | None = None,
    device: str | torch.device | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The pre-alignment stage named ``mode`` (a bundle config's ``prealign`` key).

    Args:
        mode: ``"none"`` (returns ``None``), ``"opt"`` (``optim``), ``"net"`` (``network`` with
            ``checkpoint``) or ``"net+opt"`` (the network's answer polished by ``optim``).
        network, checkpoint, device: the affine network for ``net`` modes.
        optim: the :class:`OptimAffine` for ``opt`` modes.
    """
    mode = str(mode).lower()
    if mode not in PREALIGN_MODES:
        raise ValueError(f"prealign must be one of {', '.join(PREALIGN_MODES)}, got {mode!r}.")
    if mode == "none":
        return None
    if mode == "opt":
        if optim is None:
            raise ValueError("prealign 'opt' needs an OptimAffine (config key prealign_optim).")
        return optim
    if network is None:
        raise ValueError(f"prealign {mode!r} needs an affine network (config key affine_network_def).")
    return NetAffine(network, checkpoint, device, polish=optim if mode == "net+opt" else None)
