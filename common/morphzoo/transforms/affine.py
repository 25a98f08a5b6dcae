"""Affine maps between grids, as matrices and as displacement fields (dimension-generic).

Convention: an affine ``theta`` of shape ``(B, N, N + 1)`` maps *normalised fixed coordinates* to
normalised moving coordinates, both in array-axis order, with ``align_corners=True``: along an axis
of ``n`` voxels, voxel index ``i`` sits at ``2 i / (n - 1) - 1``. In these coordinates the same
matrix describes the same map on every grid covering the same field of view, so an affine found on
a coarse network grid applies unchanged to the fixed image's own grid.

On a grid of size ``S`` the map becomes a displacement field in voxels (MONAI ``Warp``
convention, backward warping ``warped(x) = moving(x + ddf(x))``) by :func:`affine_to_ddf`, and a
field ``u`` applied *after* the affine composes into one field by :func:`compose_affine_field`:
``x -> A(x + u(x))``, so that warping once with the composed field equals warping the moving image
by the affine and the result by ``u``.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "identity_theta",
    "theta_to_voxel",
    "theta_from_voxel",
    "affine_to_ddf",
    "compose_affine_field",
    "compose_thetas",
    "homogeneous",
    "centred_affine",
    "TRANSFORM_MODES",
    "num_affine_params",
    "resample_affine",
]

TRANSFORM_MODES = ("translation", "rigid", "similarity", "affine")


def _check_theta(theta: torch.Tensor, spatial_dims: int | None = None) -> int:
    if theta.ndim != 3 or theta.shape[2] != theta.shape[1] + 1 or theta.shape[1] not in (2, 3):
        raise ValueError(f"theta must have shape (B, N, N + 1) with N = 2 or 3, got {tuple(theta.shape)}.")
    if spatial_dims is not None and theta.shape[1] != spatial_dims:
        raise ValueError(f"theta of shape {tuple(theta.shape)} is {theta.shape[1]}D, the grid is {spatial_dims}D.")
    return int(theta.shape[1])


def identity_theta(batch: int, spatial_dims: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``(B, N, N + 1)`` identity affines."""
    eye = torch.eye(spatial_dims, spatial_dims + 1, dtype=dtype, device=device)
    return eye.expand(batch, -1, -1).clone()


def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """``(B, N, N + 1)`` -> ``(B, N + 1, N + 1)`` with the last row ``(0, ..., 0, 1)``."""
    n = _check_theta(theta)
    row = torch.zeros(theta.shape[0], 1, n + 1, dtype=theta.dtype, device=theta.device)
    row[:, 0, n] = 1.0
    return torch.cat([theta, row], dim=1)


def _voxel_frame(size: Sequence[int], dtype, device) -> torch.Tensor:
    """``(N + 1, N + 1)`` matrix taking voxel indices to normalised coordinates."""
    n = len(size)
    t = torch.eye(n + 1, dtype=dtype, device=device)
    for k, s in enumerate(size):
        scale = 2.0 / (s - 1) if s > 1 else 1.0
        t[k, k] = scale
        t[k, n] = -1.0 if s > 1 else 0.0
    return t


def theta_to_voxel(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Normalised ``theta`` -> the same map in voxel indices of a grid of ``size``, ``(B, N, N + 1)``."""
    n = _check_theta(theta, len(size))
    t = _voxel_frame(size, theta.dtype, theta.device)
    return (torch.linalg.inv(t) @ homogeneous(theta) @ t)[:, :n]


def theta_from_voxel(theta_vox: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Voxel-index affine on a grid of ``size`` -> normalised ``theta``, ``(B, N, N + 1)``."""
    n = _check_theta(theta_vox, len(size))
    t = _voxel_frame(size, theta_vox.dtype, theta_vox.device)
    return (t @ homogeneous(theta_vox) @ torch.linalg.inv(t))[:, :n]


def _voxel_grid(size: Sequence[int], dtype, device) -> torch.Tensor:
    axes = [torch.arange(s, dtype=dtype, device=device) for s in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)  # (N, *S)


def affine_to_ddf(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The displacement field of an affine on a grid of ``size``.

    Args:
        theta: ``(B, N, N + 1)`` normalised affine (fixed -> moving).
        size: the grid, ``N`` integers.

    Returns:
        ``(B, N, *size)`` displacement in voxels of that grid, array-axis order:
        ``ddf(i) = A_vox [i; 1] - i``.
    """
    n = _check_theta(theta, len(size))
    a = theta_to_voxel(theta, size)
    grid = _voxel_grid(size, theta.dtype, theta.device).reshape(n, -1)  # (N, P)
    mapped = torch.einsum("bij,jp->bip", a[:, :, :n], grid) + a[:, :, n:]
    return (mapped - grid[None]).reshape(theta.shape[0], n, *size)


def compose_affine_field(theta: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """One field for "the affine, then ``ddf``": ``x -> A(x + u(x))``.

    Warping the moving image once with the result equals warping it by the affine and then
    warping that result by ``ddf`` (up to the second interpolation the composition avoids).

    Args:
        theta: ``(B, N, N + 1)`` normalised affine (fixed -> moving).
        ddf: ``(B, N, *S)`` field ``u`` in voxels of the grid ``S``, found on the affinely
            pre-aligned pair.

    Returns:
        ``(B, N, *S)``: ``A_vox (x + u(x)) - x`` in voxels of ``S``.
    """
    n = _check_theta(theta, ddf.ndim - 2)
    if ddf.shape[1] != n or ddf.shape[0] != theta.shape[0]:
        raise ValueError(f"ddf of shape {tuple(ddf.shape)} does not match theta of shape {tuple(theta.shape)}.")
    size = tuple(ddf.shape[2:])
    linear = theta_to_voxel(theta, size)[:, :, :n]  # (B, N, N)
    moved = torch.einsum("bij,bj...->bi...", linear, ddf)
    return affine_to_ddf(theta, size) + moved


def compose_thetas(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The normalised affine of "``first``, then ``second``" as point maps fixed -> moving:
    ``x -> A_first(A_second(x))`` (warping by ``first`` then warping the result by ``second``)."""
    n = _check_theta(first)
    _check_theta(second, n)
    return (homogeneous(first) @ homogeneous(second))[:, :n]


def num_affine_params(mode: str, spatial_dims: int) -> int:
    """Number of free parameters of a transform ``mode`` of :data:`TRANSFORM_MODES`."""
    n = spatial_dims
    rot = n * (n - 1) // 2
    counts = {"translation": n, "rigid": n + rot, "similarity": n + rot + 1, "affine": n + n * n}
    if mode not in counts:
        raise ValueError(f"transform mode must be one of {TRANSFORM_MODES}, got {mode!r}.")
    return counts[mode]


def _skew(params: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n(n-1)/2)`` -> ``(B, n, n)`` skew-symmetric matrices."""
    s = torch.zeros(params.shape[0], n, n, dtype=params.dtype, device=params.device)
    idx = torch.triu_indices(n, n, offset=1)
    s[:, idx[0], idx[1]] = params
    return s - s.transpose(1, 2)


def centred_affine(params: torch.Tensor, mode: str, size: Sequence[int]) -> torch.Tensor:
    """Normalised ``theta`` from transform parameters about the grid centre, in voxel units.

    The map is ``x -> c + L (x - c) + t`` in voxel indices of ``size`` (``c`` the grid centre),
    with ``t`` the first ``N`` parameters (voxels) and ``L``:

    - ``"translation"``: the identity;
    - ``"rigid"``: ``exp(skew(r))`` (a rotation, ``N(N-1)/2`` parameters ``r``);
    - ``"similarity"``: ``exp(s) exp(skew(r))`` (one log-scale ``s`` after ``r``);
    - ``"affine"``: ``I + M`` (``N * N`` parameters ``M``, row-major).

    All zeros give the identity. Args: ``params`` ``(B, P)``; returns ``(B, N, N + 1)``.
    """
    n = len(size)
    p = num_affine_params(mode, n)
    if params.ndim != 2 or params.shape[1] != p:
        raise ValueError(f"{mode} in {n}D takes (B, {p}) parameters, got {tuple(params.shape)}.")
    b = params.shape[0]
    t = params[:, :n]
    rot = n * (n - 1) // 2
    eye = torch.eye(n, dtype=params.dtype, device=params.device).expand(b, n, n)
    if mode == "translation":
        lin = eye
    elif mode == "rigid":
        lin = torch.linalg.matrix_exp(_skew(params[:, n : n + rot], n))
    elif mode == "similarity":
        lin = torch.exp(params[:, n + rot])[:, None, None] * torch.linalg.matrix_exp(_skew(params[:, n : n + rot], n))
    else:
        lin = eye + params[:, n:].reshape(b, n, n)
    c = torch.tensor([(s - 1) / 2.0 for s in size], dtype=params.dtype, device=params.device)
    offset = c[None] + t - torch.einsum("bij,j->bi", lin, c)
    theta_vox = torch.cat([lin, offset[:, :, None]], dim=2)
    return theta_from_voxel(theta_vox, size)


def resample_affine(
    image: torch.Tensor, theta: torch.Tensor | None, size: Sequence[int], mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Sample ``image`` at ``A(x)`` for every point ``x`` of a grid of ``size`` over the same field of
    view: the affine and a change of grid in one interpolation.

    ``theta=None`` is the identity, i.e. a resize with ``align_corners=True`` (what
    :func:`morphzoo.transforms.spatial.resize_image` does). Outside the image the border value is
    repeated (``padding_mode="border"``, as MONAI ``Warp`` does for images; ``"zeros"`` for labels).

    Args:
        image: ``(B, C, *S_in)``.
        theta: ``(B, N, N + 1)`` normalised affine (fixed -> moving) or ``None``.
        size: the output grid.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``grid_sample`` padding (``"border"``, ``"zeros"``).

    Returns:
        ``(B, C, *size)``.
    """
    n = image.ndim - 2
    if n not in (2, 3) or len(size) != n:
        raise ValueError(f"image of shape {tuple(image.shape)} and size {list(size)} must be 2D or 3D alike.")
    b = image.shape[0]
    if theta is None:
        theta = identity_theta(b, n, image.dtype, image.device)
    _check_theta(theta, n)
    axes = [torch.linspace(-1.0, 1.0, int(s), dtype=image.dtype, device=image.device) if s > 1 else torch.zeros(1, dtype=image.dtype, device=image.device) for s in size]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).reshape(n, -1)  # (N, P)
    theta = theta.to(image.dtype)
    mapped = torch.einsum("bij,jp->bip", theta[:, :, :n], pts) + theta[:, :, n:]  # (B, N, P), array-axis order
    grid = mapped.flip(1).transpose(1, 2).reshape(b, *[int(s) for s in size], n)  # grid_sample wants (x, y[, z])
    return torch.nn.functional.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
