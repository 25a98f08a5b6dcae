"""The one reader of subjects and pairs, used by training (:class:`~morphzoo.transforms.LoadSubjectd`),
evaluation and the benchmark (:func:`read_pair_item`) and a user's own files (``Registrar.read_pair``).

A subject is an image and an optional label map. Relative paths are resolved against one data root
(the bundle configs' ``dataset_dir``); ``slice_axis``/``slice_index`` take one 2D slice of a volume
(``hippocampus2d``); ``pixel_size_mm`` gives PNG files their spacing (HC18). Label values outside
the declared ``labels`` are handled by one switch, ``label_policy``: ``"map"`` sets them to
background with a warning naming the file, value and voxel count (the benchmark data's known
hippocampus ``-2`` defect), ``"error"`` rejects the file (a user's own input).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from morphzoo.data.labels import clean_label, unexpected_label_counts
from morphzoo.paths import data_root
from morphzoo.transforms.io import ImageRecord, InputError, read_image, read_label

__all__ = ["LABEL_POLICIES", "resolve_path", "read_subject", "read_pair_item", "slice_record"]

LABEL_POLICIES = ("map", "error")


def resolve_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path | None:
    """``path`` if absolute, else ``root / path`` (default root :func:`morphzoo.paths.data_root`);
    ``None``/empty stays ``None``."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(root if root is not None else data_root()) / p


def slice_record(rec: ImageRecord, axis: int, index: int) -> ImageRecord:
    """One 2D slice of a 3D record along array axis ``axis`` (spacing and affine of the other two axes)."""
    if rec.spatial_dims != 3 or not 0 <= index < rec.shape[axis]:
        raise InputError(f"{rec.path}: cannot take slice {index} along axis {axis} of an image of shape {rec.shape}.")
    arr = np.take(rec.array, index, axis=axis)
    sp = [s for i, s in enumerate(rec.spacing) if i != axis]
    keep = [i for i in range(rec.array.ndim) if i != axis]
    aff = np.eye(4)
    aff[:2, :2] = rec.affine[np.ix_(keep, keep)]
    return ImageRecord(np.ascontiguousarray(arr), aff, tuple(sp), rec.path, rec.kind, None)


def read_subject(
    image: str | os.PathLike,
    label: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    labels: Sequence[int] | None = None,
    label_policy: str = "map",
    pixel_size_mm: float | Sequence[float] | None = None,
    slice_axis: int | None = None,
    slice_index: int | None = None,
    role: str = "",
) -> tuple[ImageRecord, ImageRecord | None]:
    """Read and validate one subject.

    Args:
        image, label: file paths, absolute or relative to ``root``.
        root: data root (default :func:`morphzoo.paths.data_root`).
        labels: declared label values; ``None`` accepts any integer labels.
        label_policy: ``"map"`` or ``"error"`` for values outside ``labels`` (see the module).
        pixel_size_mm: PNG spacing (one value for both axes, or one per axis); NIfTI keeps its own.
        slice_axis, slice_index: take this 2D slice of a 3D subject.
        role: how the files are named in messages (``"moving"``, ``"fixed"``...).

    Returns:
        ``(image, label)`` records; ``label`` is ``None`` without a label path. Label arrays are int16.

    Raises:
        InputError: any problem with either file, naming it (see :func:`~morphzoo.transforms.read_image`).
    """
    if label_policy not in LABEL_POLICIES:
        raise ValueError(f"label_policy must be one of {LABEL_POLICIES}, got {label_policy!r}.")
    what = f"{role} image".strip()
    lwhat = f"{role} label".strip()
    sp = None
    if pixel_size_mm is not None:
        sp = tuple(float(s) for s in pixel_size_mm) if isinstance(pixel_size_mm, (list, tuple)) else (float(pixel_size_mm),) * 2
    img = read_image(resolve_path(image, root), spacing=sp, what=what)
    lab = None
    lpath = resolve_path(label, root)
    if lpath is not None:
        lab = read_label(lpath, spacing=sp, what=lwhat)
        if lab.shape != img.shape:
            raise InputError(f"{lpath}: {lwhat} shape {lab.shape} differs from {what} {img.shape} ({img.path}).")
        if labels is not None:
            allowed = [int(v) for v in labels]
            bad = unexpected_label_counts(lab.array, allowed)
            if bad and label_policy == "error":
                desc = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad.items()))
                raise InputError(f"{lpath}: {lwhat} holds values outside the declared labels {sorted(allowed)}: {desc}.")
            lab.array = clean_label(lab.array, allowed, source=str(lpath)).astype(np.int16)
    if slice_axis is not None:
        ax, ix = int(slice_axis), int(slice_index if slice_index is not None else 0)
        img = slice_record(img, ax, ix)
        lab = slice_record(lab, ax, ix) if lab is not None else None
    return img, lab


def read_pair_item(
    item: Mapping[str, Any],
    labels: Sequence[int] | None = None,
    root: str | os.PathLike | None = None,
    label_policy: str = "map",
) -> tuple[ImageRecord, ImageRecord, ImageRecord | None, ImageRecord | None]:
    """Read a datalist pair item (``moving``, ``fixed``, optional ``moving_label``/``fixed_label``,
    ``moving_pixel_size_mm``/``fixed_pixel_size_mm``, ``slice_axis``/``slice_index``) into
    ``(moving, fixed, moving_label, fixed_label)`` records with :func:`read_subject`."""
    recs: dict[str, tuple[ImageRecord, ImageRecord | None]] = {}
    for role in ("moving", "fixed"):
        recs[role] = read_subject(
            item[role],
            item.get(f"{role}_label"),
            root=root,
            labels=labels,
            label_policy=label_policy,
            pixel_size_mm=item.get(f"{role}_pixel_size_mm"),
            slice_axis=item.get("slice_axis"),
            slice_index=item.get("slice_index"),
            role=role,
        )
    return recs["moving"][0], recs["fixed"][0], recs["moving"][1], recs["fixed"][1]
