"""Resampling between grids: a moving image onto the fixed image's grid, images and fields onto the
network's grid and back (a displacement field resized by a factor s along an axis is multiplied by s),
and the one interpolation of an original moving image through the grid change and a field together."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.blocks import Warp
from monai.transforms import SpatialResample

from morphzoo.transforms.io import ImageRecord

__all__ = [
    "resample_to_reference",
    "reference_to_moving_voxels",
    "warp_from_reference",
    "resize_image",
    "resize_field",
    "compose_ddf",
]


def resample_to_reference(moving: ImageRecord, reference: ImageRecord, *, label: bool = False) -> np.ndarray:
    """Resample ``moving`` onto ``reference``'s grid.

    NIfTI: world-coordinate resampling through both affines (MONAI ``SpatialResample``), so pairs
    of different sizes, spacings or orientations land on the fixed grid; outside the moving field
    of view is 0. PNG (no geometry stored): the moving image is resized to the reference size.

    Args:
        moving: image to resample.
        reference: image whose grid is the target.
        label: nearest-neighbour interpolation (label maps) instead of (bi/tri)linear.

    Returns:
        array with ``reference.shape``.
    """
    if moving.spatial_dims != reference.spatial_dims:
        raise ValueError(
            f"{moving.path} is {moving.spatial_dims}D (shape {moving.shape}) but {reference.path} is "
            f"{reference.spatial_dims}D (shape {reference.shape}); cannot register 2D with 3D."
        )
    if moving.shape == reference.shape and np.allclose(moving.affine, reference.affine, atol=1e-5):
        return moving.array
    if moving.kind == "png" or reference.kind == "png":
        t = torch.as_tensor(moving.array, dtype=torch.float32)[None, None]
        return resize_image(t, reference.shape, label=label)[0, 0].numpy()
    img = MetaTensor(torch.as_tensor(moving.array, dtype=torch.float32)[None], affine=torch.as_tensor(moving.affine))
    resampler = SpatialResample(mode="nearest" if label else "bilinear", padding_mode="zeros", align_corners=True)
    out = resampler(img, dst_affine=torch.as_tensor(reference.affine), spatial_size=reference.shape)
    return np.asarray(out[0].detach().cpu().numpy(), dtype=np.float32)


def reference_to_moving_voxels(moving: ImageRecord, reference: ImageRecord) -> np.ndarray:
    """The map :func:`resample_to_reference` interpolates along, as a matrix.

    Returns:
        ``(N + 1, N + 1)`` homogeneous matrix taking reference voxel indices (array-axis order) to
        moving voxel indices: ``inv(A_moving) @ A_reference`` restricted to the ``N`` array axes for
        NIfTI (world coordinates; for 2D, the in-plane part); for PNG the resize
        ``i_m = i_r (n_m - 1) / (n_r - 1)`` per axis; the identity for the same grid.
    """
    n = reference.spatial_dims
    if moving.shape == reference.shape and np.allclose(moving.affine, reference.affine, atol=1e-5):
        return np.eye(n + 1)
    if moving.kind == "png" or reference.kind == "png":
        scale = [(m - 1) / max(r - 1, 1) for m, r in zip(moving.shape, reference.shape)]
        return np.diag(scale + [1.0])
    full = np.linalg.inv(np.asarray(moving.affine, dtype=np.float64)) @ np.asarray(reference.affine, dtype=np.float64)
    idx = list(range(n)) + [3]
    return full[np.ix_(idx, idx)]


def warp_from_reference(moving: np.ndarray | torch.Tensor, ddf: torch.Tensor, voxel_map: np.ndarray, *, label: bool = False) -> torch.Tensor:
    """``moving(M (x + ddf(x)))``: the original moving image interpolated once on the reference grid.

    The grid change (``M`` = :func:`reference_to_moving_voxels`) and the displacement field are
    composed into one map from reference voxels to original moving voxels, so resampling a pair of
    different grids and then warping costs one interpolation instead of two. Points outside the
    moving image are 0 (as in :func:`resample_to_reference`).

    Args:
        moving: ``(*S_m)`` original moving array.
        ddf: ``(1, N, *S_r)`` displacement in voxels of the reference grid, array-axis order.
        voxel_map: ``(N + 1, N + 1)`` reference voxel -> moving voxel matrix.
        label: nearest-neighbour interpolation (label maps) instead of (bi/tri)linear.

    Returns:
        ``(1, 1, *S_r)`` float tensor on ``ddf``'s device.

    Raises:
        ValueError: if the shapes of ``moving``, ``ddf`` and ``voxel_map`` do not agree.
    """
    mov = torch.as_tensor(moving, dtype=torch.float32, device=ddf.device)
    n = mov.ndim
    if ddf.ndim != n + 2 or ddf.shape[:2] != (1, n) or tuple(np.shape(voxel_map)) != (n + 1, n + 1):
        raise ValueError(
            f"moving {tuple(mov.shape)}, field {tuple(ddf.shape)} and voxel map {np.shape(voxel_map)} do not agree: "
            f"expected a (1, {n}, *S) field and a ({n + 1}, {n + 1}) matrix."
        )
    size = ddf.shape[2:]
    axes = [torch.arange(int(s), dtype=torch.float32, device=ddf.device) for s in size]
    pos = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=0) + ddf[0].float()  # (N, *S_r)
    m = torch.as_tensor(np.asarray(voxel_map, dtype=np.float32), device=ddf.device)
    mapped = torch.einsum("ij,j...->i...", m[:n, :n], pos) + m[:n, n].view(n, *([1] * n))
    denom = torch.tensor([float(max(s - 1, 1)) for s in mov.shape], device=ddf.device).view(n, *([1] * n))
    grid = (2.0 * mapped / denom - 1.0).movedim(0, -1).flip(-1)[None]
    return F.grid_sample(mov[None, None], grid, mode="nearest" if label else "bilinear", padding_mode="zeros", align_corners=True)


def resize_image(x: torch.Tensor, size: Sequence[int], *, label: bool = False) -> torch.Tensor:
    """Resize a ``(B, C, *S)`` tensor to ``size`` (linear, or nearest for labels); no-op when equal."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if label:
        return F.interpolate(x, size=size, mode="nearest")
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=True)


def resize_field(ddf: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a displacement field ``(B, N, *S)`` (voxel units) to ``size`` and rescale its values.

    With ``align_corners=True`` a voxel index i on a grid of n maps to i (m-1)/(n-1) on a grid of
    m, so component k is multiplied by ``(m_k - 1) / (n_k - 1)``.
    """
    size = tuple(int(s) for s in size)
    src = tuple(ddf.shape[2:])
    if ddf.shape[1] != len(src) or len(size) != len(src):
        raise ValueError(f"ddf of shape {tuple(ddf.shape)} does not match target size {size}.")
    if src == size:
        return ddf
    out = resize_image(ddf, size)
    scale = torch.tensor([(m - 1) / max(n - 1, 1) for m, n in zip(size, src)], dtype=ddf.dtype, device=ddf.device)
    return out * scale.view(1, -1, *([1] * len(size)))


_FIELD_WARP = Warp(mode="bilinear", padding_mode="border")


def compose_ddf(ddf: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The one field that warps like ``ddf`` followed by ``residual`` (MONAI ``Warp`` convention).

    ``Warp(Warp(m, ddf), residual)(x) = m(x + r(x) + u(x + r(x)))``, so the composed displacement is
    ``r + u o (id + r)``: ``ddf`` is sampled at the points the residual moves to (linear, border
    padding) and the residual added. A recursive cascade (a network applied again to its own warped
    output) composes its passes this way, so the moving image is still interpolated once.

    Args:
        ddf: the first field ``u``, ``(B, N, *S)`` in voxels of the grid ``S``.
        residual: the field ``r`` found on ``Warp(m, ddf)``, same shape.

    Returns:
        ``(B, N, *S)``, ``r + Warp(u, r)``.

    Raises:
        ValueError: if the shapes differ or are not ``(B, N, *S)`` with ``N = len(S)`` in 2 or 3.
    """
    if ddf.shape != residual.shape or ddf.ndim not in (4, 5) or ddf.shape[1] != ddf.ndim - 2:
        raise ValueError(f"compose_ddf needs two (B, N, *S) fields of one shape, got {tuple(ddf.shape)} and {tuple(residual.shape)}.")
    return residual + _FIELD_WARP(ddf, residual)
