"""Jacobian-determinant metrics of dense displacement fields (DDF).

Conventions (shared with :class:`monai.networks.blocks.Warp`):

- ``ddf`` has shape ``(B, N, H, W[, D])`` with ``N`` the number of spatial dimensions (2 or 3).
- Displacements are in voxels; channel ``i`` is the displacement along array axis ``i`` (the
  ``i``-th spatial axis after the batch and channel axes), so that
  ``warped(x) = moving(x + ddf(x))``.
- The transformation whose Jacobian is measured is ``phi(x) = x + ddf(x)``, so
  ``J_ij(x) = delta_ij + d ddf_i / d x_j``.

Spatial derivatives use :func:`torch.gradient` with unit spacing: second-order central
differences ``(u[k+1] - u[k-1]) / 2`` at interior voxels and first-order one-sided
differences ``u[1] - u[0]`` / ``u[-1] - u[-2]`` on the outermost voxel layer. Both are exact
for fields that are linear in ``x``, so no border is cropped by default. (The Learn2Reg
evaluation instead correlates with ``[-0.5, 0, 0.5]`` and zero padding, which corrupts the
outer layer, and then crops 2 voxels on each side; pass ``border=2`` to the statistics
below to exclude the same shell.)
"""

from __future__ import annotations

import torch

__all__ = [
    "jacobian_determinant",
    "folding_count",
    "folding_percentage",
    "jacobian_std",
    "sdlogj",
    "sdlogj_learn2reg",
    "jacobian_stats",
]


def _check_ddf(ddf: torch.Tensor) -> int:
    """Validate a DDF and return its number of spatial dimensions."""
    if not isinstance(ddf, torch.Tensor):
        raise ValueError(f"ddf must be a torch.Tensor, got {type(ddf).__name__}.")
    if ddf.ndim not in (4, 5):
        raise ValueError(f"ddf must have shape (B, N, H, W[, D]) with N in {{2, 3}}, got shape {tuple(ddf.shape)}.")
    spatial_dims = ddf.ndim - 2
    if ddf.shape[1] != spatial_dims:
        raise ValueError(
            f"ddf must have {spatial_dims} channels for {spatial_dims} spatial dims, got shape {tuple(ddf.shape)}."
        )
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"ddf needs at least 2 voxels along every spatial axis, got shape {tuple(ddf.shape)}.")
    return spatial_dims


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``phi(x) = x + ddf(x)`` at every voxel.

    Derivatives are central differences in the interior and one-sided differences on the
    outermost voxel layer (:func:`torch.gradient`, unit spacing), see the module docstring.
    A zero field gives 1 everywhere; a linear field ``ddf(x) = A x`` gives ``det(I + A)``
    exactly at every voxel, borders included.

    Args:
        ddf: displacement field of shape ``(B, N, H, W[, D])``, ``N`` = number of spatial dims
            (2 or 3), in voxels, channel ``i`` along array axis ``i``.

    Returns:
        Tensor of shape ``(B, H, W[, D])`` with the Jacobian determinant (floating dtype of ``ddf``,
        ``float32`` if ``ddf`` is not floating point).

    Raises:
        ValueError: when ``ddf`` does not have shape ``(B, N, *S)`` with ``N = len(S)`` in {2, 3}, or a
            spatial size is smaller than 2.
    """
    spatial_dims = _check_ddf(ddf)
    if not torch.is_floating_point(ddf):
        ddf = ddf.float()
    # grads[j] has shape (B, N, *S): grads[j][:, i] = d ddf_i / d x_j
    grads = torch.gradient(ddf, dim=tuple(range(2, 2 + spatial_dims)))
    # jac[i][j] = delta_ij + d ddf_i / d x_j, each (B, *S)
    jac = [[grads[j][:, i] + (1.0 if i == j else 0.0) for j in range(spatial_dims)] for i in range(spatial_dims)]
    if spatial_dims == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (
        jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
    )


def _crop(x: torch.Tensor, border: int, spatial_dims: int) -> torch.Tensor:
    """Crop ``border`` voxels on each side of the last ``spatial_dims`` axes."""
    if border == 0:
        return x
    sl = (slice(None),) * (x.ndim - spatial_dims) + (slice(border, -border),) * spatial_dims
    return x[sl]


def _det_and_mask(
    ddf: torch.Tensor, mask: torch.Tensor | None, border: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened determinant ``(B, M)`` and boolean voxel selection ``(B, M)``."""
    spatial_dims = _check_ddf(ddf)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}.")
    spatial = tuple(ddf.shape[2:])
    if border > 0 and min(spatial) <= 2 * border:
        raise ValueError(f"border={border} leaves no voxel in ddf of shape {tuple(ddf.shape)}.")
    det = jacobian_determinant(ddf)
    batch = det.shape[0]
    if mask is None:
        sel = torch.ones_like(det, dtype=torch.bool)
    else:
        mask = torch.as_tensor(mask, device=det.device)
        mask_shape = tuple(mask.shape)
        if mask.ndim == spatial_dims + 2 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.ndim != spatial_dims + 1 or tuple(mask.shape[1:]) != spatial or mask.shape[0] not in (1, batch):
            raise ValueError(
                f"mask must have shape (B, 1, *S) or (B, *S) matching ddf {tuple(ddf.shape)}, got {mask_shape}."
            )
        sel = mask.bool().expand_as(det)
    det = _crop(det, border, spatial_dims).reshape(batch, -1)
    sel = _crop(sel, border, spatial_dims).reshape(batch, -1)
    return det, sel


def _masked_std(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Population standard deviation (ddof=0, as ``numpy.std``) of ``x`` over ``sel`` per row."""
    n = sel.sum(dim=1).to(x.dtype)
    xs = torch.where(sel, x, torch.zeros_like(x))
    mean = xs.sum(dim=1) / n
    var = (torch.where(sel, x - mean[:, None], torch.zeros_like(x)) ** 2).sum(dim=1) / n
    return var.sqrt()


def folding_count(ddf: torch.Tensor, mask: torch.Tensor | None = None, border: int = 0) -> torch.Tensor:
    """Number of voxels where the Jacobian determinant is ``<= 0`` (folding).

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels (see :func:`jacobian_determinant`).
        mask: optional boolean mask ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])`` (batch size 1 is
            broadcast) selecting the voxels that are counted.
        border: number of voxels excluded on each side of every spatial axis (0: none; Learn2Reg: 2).

    Returns:
        Tensor of shape ``(B,)`` (``int64``) with the number of folding voxels.
    """
    det, sel = _det_and_mask(ddf, mask, border)
    return ((det <= 0) & sel).sum(dim=1)


def folding_percentage(ddf: torch.Tensor, mask: torch.Tensor | None = None, border: int = 0) -> torch.Tensor:
    """Percentage (0..100) of the selected voxels where the Jacobian determinant is ``<= 0``.

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels (see :func:`jacobian_determinant`).
        mask: optional boolean mask ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``.
        border: number of voxels excluded on each side of every spatial axis.

    Returns:
        Tensor of shape ``(B,)`` with the percentage of folding voxels (NaN for an empty mask).
    """
    det, sel = _det_and_mask(ddf, mask, border)
    return 100.0 * ((det <= 0) & sel).sum(dim=1).to(det.dtype) / sel.sum(dim=1).to(det.dtype)


def jacobian_std(ddf: torch.Tensor, mask: torch.Tensor | None = None, border: int = 0) -> torch.Tensor:
    """Standard deviation (population, ddof=0) of the Jacobian determinant over the selected voxels.

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels (see :func:`jacobian_determinant`).
        mask: optional boolean mask ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``.
        border: number of voxels excluded on each side of every spatial axis.

    Returns:
        Tensor of shape ``(B,)``.
    """
    det, sel = _det_and_mask(ddf, mask, border)
    return _masked_std(det, sel)


def sdlogj(
    ddf: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-9, border: int = 0
) -> torch.Tensor:
    """Standard deviation of the log Jacobian determinant (SDlogJ).

    ``std(log(clamp(det, eps, 1e9)))`` with the population standard deviation (ddof=0), as in the
    Learn2Reg evaluation (clip to ``[1e-9, 1e9]``, ``numpy.std``). Differences from that script:
    the Learn2Reg code adds 3 to the determinant before clipping (a quirk we do not reproduce)
    and always crops a 2-voxel border (here ``border``, default 0, see the module docstring).

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels (see :func:`jacobian_determinant`).
        mask: optional boolean mask ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``.
        eps: lower clamp of the determinant before the logarithm (folding voxels get ``log(eps)``).
        border: number of voxels excluded on each side of every spatial axis (Learn2Reg: 2).

    Returns:
        Tensor of shape ``(B,)``.
    """
    det, sel = _det_and_mask(ddf, mask, border)
    return _masked_std(torch.log(det.clamp(eps, 1e9)), sel)


def sdlogj_learn2reg(ddf: torch.Tensor) -> torch.Tensor:
    """SDlogJ exactly as Learn2Reg's evaluation code defines it (MDL-UzL/L2R, ``evaluation/utils.py``):
    ``std(log(clip(det + 3, 1e-9, 1e9)))`` over the field cropped by 2 voxels on every side, central
    differences. The ``+ 3`` makes it a different, much smaller number than :func:`sdlogj`
    (folded voxels no longer dominate it); report it only where a number is compared with a
    Learn2Reg table, and name it.

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels.

    Returns:
        Tensor of shape ``(B,)``.
    """
    det, sel = _det_and_mask(ddf, None, 2)
    return _masked_std(torch.log((det + 3.0).clamp(1e-9, 1e9)), sel)


def jacobian_stats(
    ddf: torch.Tensor, mask: torch.Tensor | None = None, border: int = 0
) -> dict[str, torch.Tensor]:
    """All Jacobian statistics from one determinant computation.

    Args:
        ddf: displacement field ``(B, N, H, W[, D])`` in voxels (see :func:`jacobian_determinant`).
        mask: optional boolean mask ``(B, 1, H, W[, D])`` or ``(B, H, W[, D])``.
        border: number of voxels excluded on each side of every spatial axis.

    Returns:
        Dict of ``(B,)`` tensors with keys ``"folding_count"``, ``"folding_percent"``,
        ``"jacobian_std"``, ``"sdlogj"`` (same definitions as the individual functions) and
        ``"sdlogj_l2r"`` (:func:`sdlogj_learn2reg`, Learn2Reg's definition, when every spatial
        size exceeds 4).
    """
    det, sel = _det_and_mask(ddf, mask, border)
    count = ((det <= 0) & sel).sum(dim=1)
    return {
        "folding_count": count,
        "folding_percent": 100.0 * count.to(det.dtype) / sel.sum(dim=1).to(det.dtype),
        "jacobian_std": _masked_std(det, sel),
        "sdlogj": _masked_std(torch.log(det.clamp(1e-9, 1e9)), sel),
        **({"sdlogj_l2r": sdlogj_learn2reg(ddf)} if min(ddf.shape[2:]) > 4 else {}),
    }
