"""Array plumbing shared by the plotting helpers (private).

Everything here turns torch tensors / numpy arrays in the MorphZoo conventions into plain
numpy arrays of the shapes the plotting code wants:

- a displacement field ``ddf`` is ``(N, *S)`` for one item or ``(B, N, *S)`` for a batch
  (item 0 is used), ``N == len(S)``, channel ``i`` = displacement along array axis ``i``
  in voxels;
- an image is ``(*S)``, ``(1, *S)`` or ``(B, 1, *S)``;
- a label map is like an image, or one-hot ``(C, *S)`` / ``(B, C, *S)`` with ``C > 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor (incl. MONAI ``MetaTensor``), array or sequence to numpy.

    Args:
        x: tensor-like of any shape.

    Returns:
        A numpy array of the same shape (half-precision tensors are upcast to float32).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        import torch  # lazy: numpy inputs never need torch

        t = x.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return np.asarray(t.numpy() if hasattr(t, "numpy") else t)
    return np.asarray(x)


def field_item(ddf: Any) -> np.ndarray:
    """Return one displacement field ``(N, *S)`` as float64.

    Args:
        ddf: ``(N, *S)`` or ``(B, N, *S)`` with ``N == len(S)`` in {2, 3}.

    Returns:
        ``(N, *S)`` float64 array (item 0 of a batch).

    Raises:
        ValueError: if the shape fits neither layout.
    """
    a = to_numpy(ddf)
    if a.ndim in (3, 4) and a.shape[0] == a.ndim - 1:
        return a.astype(np.float64, copy=False)
    if a.ndim in (4, 5) and a.shape[1] == a.ndim - 2:
        return a[0].astype(np.float64, copy=False)
    raise ValueError(
        f"expected a displacement field (N, *S) or (B, N, *S) with N = number of spatial dims "
        f"(2 or 3), got shape {tuple(a.shape)}"
    )


def image_item(img: Any, ndim: int | None = None) -> np.ndarray:
    """Return one image ``(*S)``.

    Args:
        img: ``(*S)``, ``(1, *S)`` or ``(B, C, *S)``; leading axes are reduced by taking index 0.
        ndim: number of spatial dims (2 or 3). ``None`` infers it: leading singleton axes are
            dropped while more than 2 dims remain, then leading axes are indexed until at
            most 3 remain (so ``(1, H, W)`` is 2D and ``(1, D, H, W)`` is 3D).

    Returns:
        ``(*S)`` array.
    """
    a = to_numpy(img)
    if ndim is None:
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        while a.ndim > 3:
            a = a[0]
    else:
        while a.ndim > ndim:
            a = a[0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {tuple(to_numpy(img).shape)}")
    return a


def label_item(label: Any, ndim: int) -> np.ndarray:
    """Return one label map ``(*S)`` (one-hot inputs are argmax-ed over the channel axis).

    Args:
        label: ``(*S)``, ``(1, *S)``, ``(C, *S)`` one-hot, or a batch ``(B, C, *S)``.
        ndim: number of spatial dims.

    Returns:
        ``(*S)`` array (integer class map for one-hot inputs, otherwise the input values).
    """
    a = to_numpy(label)
    while a.ndim > ndim + 1:
        a = a[0]
    if a.ndim == ndim + 1:
        a = a[0] if a.shape[0] == 1 else np.argmax(a, axis=0)
    if a.ndim != ndim:
        raise ValueError(f"label of shape {tuple(to_numpy(label).shape)} does not fit {ndim}D")
    return a


def resolve_slice(shape: tuple[int, ...], axis: int, index: int | None) -> tuple[int, int]:
    """Validate a slicing axis/index for a 3D spatial shape.

    Args:
        shape: spatial shape ``(D, H, W)``.
        axis: axis to slice along (negative values allowed).
        index: slice index along ``axis``; ``None`` is the middle slice.

    Returns:
        ``(axis, index)`` normalised to non-negative values.
    """
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be in [-3, 2] for a 3D volume, got {axis}")
    axis %= 3
    size = shape[axis]
    if index is None:
        index = size // 2
    if not -size <= index < size:
        raise IndexError(f"slice index {index} out of range for axis {axis} of size {size}")
    return axis, index % size


def slice_image(img: np.ndarray, axis: int = 0, index: int | None = None) -> np.ndarray:
    """Cut a 2D slice from ``(*S)``: 2D arrays are returned unchanged.

    Args:
        img: ``(H, W)`` or ``(D0, D1, D2)``.
        axis: slicing axis for 3D.
        index: slice index (``None``: middle).

    Returns:
        ``(H, W)`` array: the two remaining axes in their original order.
    """
    if img.ndim == 2:
        return img
    axis, index = resolve_slice(img.shape, axis, index)
    return np.take(img, index, axis=axis)


def slice_field(field: np.ndarray, axis: int = 0, index: int | None = None) -> np.ndarray:
    """Cut the in-plane part of a field: ``(2, H, W)`` fields are returned unchanged.

    Args:
        field: ``(2, H, W)`` or ``(3, D0, D1, D2)``.
        axis: slicing axis for 3D.
        index: slice index (``None``: middle).

    Returns:
        ``(2, H, W)``: the two displacement components along the in-plane axes, in array-axis
        order (the component along ``axis`` is dropped).
    """
    if field.shape[0] == 2:
        return field
    axis, index = resolve_slice(field.shape[1:], axis, index)
    comps = [i for i in range(3) if i != axis]
    return np.take(field[comps], index, axis=axis + 1)


def robust_range(*arrays: np.ndarray, q: float = 1.0) -> tuple[float, float]:
    """Shared display range over several arrays: the ``q`` / ``100 - q`` percentiles.

    Args:
        *arrays: arrays of any shape (non-finite values are ignored).
        q: lower percentile.

    Returns:
        ``(vmin, vmax)`` with ``vmin < vmax``.
    """
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [q, 100.0 - q])
    if hi <= lo:
        lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)
