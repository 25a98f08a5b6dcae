"""Global image-similarity metrics between two image batches (one value per batch item).

All functions take ``a`` and ``b`` of the same shape ``(B, C, H, W[, D])`` and return a tensor
of shape ``(B,)``; each item is reduced over all its channels and voxels.
"""

from __future__ import annotations

import torch
from monai.metrics import SSIMMetric

__all__ = ["ncc_global", "nmi", "mse", "rmse", "ssim"]


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two image batches of identical shape ``(B, C, H, W[, D])`` and cast to floating point."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise ValueError(f"a and b must be torch.Tensors, got {type(a).__name__} and {type(b).__name__}.")
    if a.ndim not in (4, 5):
        raise ValueError(f"a must have shape (B, C, H, W[, D]), got shape {tuple(a.shape)}.")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if not torch.is_floating_point(a):
        a = a.float()
    b = b.to(a.dtype)
    return a, b


def ncc_global(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Global (zero-normalised) cross-correlation, i.e. the Pearson correlation of all values per item.

    Args:
        a: images of shape ``(B, C, H, W[, D])``.
        b: images of the same shape.

    Returns:
        Tensor of shape ``(B,)`` in ``[-1, 1]``: 1 for identical (or positively affinely related)
        images, -1 for negated ones, and 0 (not NaN) when either item is constant.

    Raises:
        ValueError: when the shapes differ or are not ``(B, C, H, W[, D])``.
    """
    a, b = _check_pair(a, b)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    num = (a * b).sum(dim=1)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _entropy(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Shannon entropy (nats) of probability tables, summed over ``dims``; ``0 log 0 = 0``."""
    return -torch.special.xlogy(p, p).sum(dim=dims)


def nmi(
    a: torch.Tensor, b: torch.Tensor, bins: int = 32, value_range: tuple[float, float] | None = None
) -> torch.Tensor:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)`` from a joint histogram.

    Values are binned into ``bins`` equal-width bins over ``value_range``; by default the range is
    the min/max of the pair ``(a[i], b[i])`` for each item ``i`` (the same bin edges for both
    images). Values outside a given ``value_range`` fall into the first/last bin. The histogram
    is built with one :func:`torch.bincount` over the whole batch.

    The result lies in ``[1, 2]``: 2 when one image determines the other's bins (e.g. identical
    images), about 1 for independent images (slightly above 1 for finite samples: the plug-in
    entropy estimate is biased, roughly by ``(bins - 1)^2 / (2 * n_voxels)`` nats of mutual
    information). When the joint entropy is 0 (both items constant) the value is 1: a
    constant image carries no information.

    Args:
        a: images of shape ``(B, C, H, W[, D])``.
        b: images of the same shape.
        bins: number of histogram bins per image (the joint histogram has ``bins**2`` cells).
        value_range: optional ``(min, max)`` shared by all items and both images.

    Returns:
        Tensor of shape ``(B,)``.

    Raises:
        ValueError: when the shapes differ or are not ``(B, C, H, W[, D])``, ``bins < 2``, or
            ``value_range`` is not increasing.
    """
    a, b = _check_pair(a, b)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}.")
    batch = a.shape[0]
    a = a.reshape(batch, -1)
    b = b.reshape(batch, -1)
    if value_range is None:
        lo = torch.minimum(a.amin(dim=1), b.amin(dim=1))[:, None]
        hi = torch.maximum(a.amax(dim=1), b.amax(dim=1))[:, None]
    else:
        if not value_range[1] > value_range[0]:
            raise ValueError(f"value_range must be (min, max) with max > min, got {value_range}.")
        lo = torch.full((batch, 1), float(value_range[0]), dtype=a.dtype, device=a.device)
        hi = torch.full((batch, 1), float(value_range[1]), dtype=a.dtype, device=a.device)
    width = (hi - lo).clamp_min(torch.finfo(a.dtype).tiny)
    ia = ((a - lo) / width * bins).floor().clamp(0, bins - 1).long()
    ib = ((b - lo) / width * bins).floor().clamp(0, bins - 1).long()
    offset = torch.arange(batch, device=a.device)[:, None] * (bins * bins)
    flat = (offset + ia * bins + ib).reshape(-1)
    joint = torch.bincount(flat, minlength=batch * bins * bins).reshape(batch, bins, bins).to(a.dtype)
    joint = joint / joint.sum(dim=(1, 2), keepdim=True)
    h_ab = _entropy(joint, (1, 2))
    h_a = _entropy(joint.sum(dim=2), (1,))
    h_b = _entropy(joint.sum(dim=1), (1,))
    ok = h_ab > 0
    return torch.where(ok, (h_a + h_b) / torch.where(ok, h_ab, torch.ones_like(h_ab)), torch.ones_like(h_ab))


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all channels and voxels of each item.

    Args:
        a: images of shape ``(B, C, H, W[, D])``.
        b: images of the same shape.

    Returns:
        Tensor of shape ``(B,)``.
    """
    a, b = _check_pair(a, b)
    return ((a - b) ** 2).reshape(a.shape[0], -1).mean(dim=1)


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean squared error over all channels and voxels of each item.

    Args:
        a: images of shape ``(B, C, H, W[, D])``.
        b: images of the same shape.

    Returns:
        Tensor of shape ``(B,)``.
    """
    return mse(a, b).sqrt()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float | None = None) -> torch.Tensor:
    """Structural similarity, a thin wrapper over :class:`monai.metrics.SSIMMetric`.

    MONAI defaults are kept (Gaussian window of size 11, sigma 1.5, k1=0.01, k2=0.03); the
    number of spatial dims is inferred from ``a``, and channels are averaged. With
    ``data_range=None`` each item uses its own range ``max(a[i], b[i]) - min(a[i], b[i])``
    (1 for a constant pair); this is applied by scaling the item by ``1 / range`` and calling
    MONAI with ``data_range=1``, which gives exactly SSIM with ``data_range=range``.

    Args:
        a: images of shape ``(B, C, H, W[, D])``, every spatial size >= 11.
        b: images of the same shape (the reference).
        data_range: dynamic range of the intensities shared by all items, or None (per item).

    Returns:
        Tensor of shape ``(B,)`` in the dtype of ``a`` (MONAI may compute in float32); identical
        images give 1.

    Raises:
        ValueError: when the shapes differ, are not ``(B, C, H, W[, D])``, or are smaller than the window.
    """
    a, b = _check_pair(a, b)
    win_size = 11
    if min(a.shape[2:]) < win_size:
        raise ValueError(f"ssim needs every spatial size >= {win_size}, got shape {tuple(a.shape)}.")
    spatial_dims = a.ndim - 2
    if data_range is None:
        dims = tuple(range(1, a.ndim))
        rng = torch.maximum(a.amax(dim=dims), b.amax(dim=dims)) - torch.minimum(a.amin(dim=dims), b.amin(dim=dims))
        rng = torch.where(rng > 0, rng, torch.ones_like(rng)).reshape(-1, *([1] * (a.ndim - 1)))
        a, b, data_range = a / rng, b / rng, 1.0
    metric = SSIMMetric(spatial_dims=spatial_dims, data_range=float(data_range), win_size=win_size)
    return metric(a, b).reshape(-1).to(a.dtype)
