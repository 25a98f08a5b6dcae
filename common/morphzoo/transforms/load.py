"""Dictionary transform that loads one subject (image + optional label) for registration pipelines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform

from morphzoo.transforms.subjects import LABEL_POLICIES, read_subject

__all__ = ["LoadSubjectd"]

logger = logging.getLogger(__name__)


class LoadSubjectd(MapTransform):
    """Load ``image`` (and ``label``) of a datalist item into channel-first tensors.

    Reads with :func:`morphzoo.transforms.subjects.read_subject`, the project's one subject reader.
    Paths may be relative to ``root`` (the configs' ``dataset_dir``) or absolute. Items may carry
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
        if label_policy not in LABEL_POLICIES:
            raise ValueError(f"label_policy must be 'map' or 'error', got {label_policy!r}.")
        self.allowed = None if allowed_labels is None else [int(v) for v in allowed_labels]
        self.label_policy = label_policy
        self.root = Path(root) if root is not None else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key = self.keys[0]
        label_key = self.keys[1] if len(self.keys) > 1 else None
        img, lab = read_subject(
            d[image_key],
            d.get(label_key) if label_key is not None else None,
            root=self.root,
            labels=self.allowed,
            label_policy=self.label_policy,
            pixel_size_mm=d.get("pixel_size_mm"),
            slice_axis=d.get("slice_axis"),
            slice_index=d.get("slice_index"),
        )
        d[image_key] = torch.as_tensor(np.ascontiguousarray(img.array))[None].float()
        d["spacing"] = torch.tensor(list(img.spacing), dtype=torch.float64)
        if lab is not None:
            d[label_key] = torch.as_tensor(np.ascontiguousarray(lab.array))[None].float()
        elif label_key is not None:
            d.pop(label_key, None)
        return d
