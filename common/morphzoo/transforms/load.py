"""Dictionary transform that loads one subject (image + optional label) for registration pipelines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform

from morphzoo.data.labels import clean_label, unexpected_label_counts
from morphzoo.paths import data_root
from morphzoo.transforms.io import InputError, read_image, read_label

__all__ = ["LoadSubjectd"]

logger = logging.getLogger(__name__)


class LoadSubjectd(MapTransform):
    """Load ``image`` (and ``label``) of a datalist item into channel-first tensors.

    Paths may be relative to the data root (``$MORPHZOO_DATA``) or absolute. Items may carry
    ``slice_axis``/``slice_index`` (take one 2D slice of a 3D volume, e.g. ``hippocampus2d``) and
    ``pixel_size_mm`` (spacing of PNG images, e.g. HC18). Output: ``image`` ``(1, *S)`` float32,
    ``label`` ``(1, *S)`` float32 integer values, ``spacing`` ``(len(S),)`` float64.

    Args:
        keys: (image key, label key); the label key may be absent from an item.
        allowed_labels: declared label values. Values outside them are handled by ``label_policy``.
        label_policy: ``"map"`` maps unexpected values to background and logs a warning naming the
            file, value and voxel count (known defect: two hippocampus files hold ``-2``);
            ``"error"`` raises :class:`~morphzoo.transforms.io.InputError`.
        root: data root for relative paths (default :func:`morphzoo.paths.data_root`).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),
        allowed_labels: Sequence[int] | None = None,
        label_policy: str = "map",
        root: str | Path | None = None,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if label_policy not in ("map", "error"):
            raise ValueError(f"label_policy must be 'map' or 'error', got {label_policy!r}.")
        self.allowed = None if allowed_labels is None else [int(v) for v in allowed_labels]
        self.label_policy = label_policy
        self.root = Path(root) if root is not None else None

    def _path(self, p: str) -> Path:
        path = Path(p)
        if not path.is_absolute():
            path = (self.root or data_root()) / path
        return path

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key = self.keys[0]
        label_key = self.keys[1] if len(self.keys) > 1 else None
        spacing = d.get("pixel_size_mm")
        png_spacing = None if spacing is None else (float(spacing), float(spacing))
        axis, index = d.get("slice_axis"), d.get("slice_index")

        img = read_image(self._path(d[image_key]), spacing=png_spacing, what="image")
        arr, sp = img.array, list(img.spacing)
        if axis is not None:
            arr = np.take(arr, int(index), axis=int(axis))
            sp.pop(int(axis))
        d[image_key] = torch.as_tensor(np.ascontiguousarray(arr))[None].float()
        d["spacing"] = torch.tensor(sp, dtype=torch.float64)

        if label_key is not None and d.get(label_key):
            lab_path = self._path(d[label_key])
            lab = read_label(lab_path, spacing=png_spacing, what="label")
            larr = lab.array
            if axis is not None:
                larr = np.take(larr, int(index), axis=int(axis))
            if larr.shape != arr.shape:
                raise InputError(f"{lab_path}: label shape {larr.shape} differs from image shape {arr.shape}.")
            if self.allowed is not None:
                if self.label_policy == "error":
                    bad = unexpected_label_counts(lab.array, self.allowed)
                    if bad:
                        raise InputError(f"{lab_path}: label values outside {self.allowed}: {bad}.")
                larr = clean_label(larr, self.allowed, source=str(lab_path))
            d[label_key] = torch.as_tensor(np.ascontiguousarray(larr))[None].float()
        elif label_key is not None:
            d.pop(label_key, None)
        return d
