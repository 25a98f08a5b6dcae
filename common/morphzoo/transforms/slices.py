"""Slice transforms for training and running 2D networks on 3D volumes.

- :class:`RandSlicePaird`: from a volume and its label, the labelled slice (moving, with its
  label) and a random unlabelled slice within distance ``radius`` of it (fixed), the sample of
  the few-label joint registration + segmentation framework (FMIRNet paper, Fig. 2).
- :class:`ResizeInPlaned`: MONAI ``Resized`` of the last two axes only, so one preprocessing
  serves a 2D slice ``(C, H, W)`` and a 3D volume ``(C, D, H, W)`` segmented slice by slice
  along its first axis, and ``Invertd`` restores the input grid of either.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Resized

__all__ = ["RandSlicePaird", "ResizeInPlaned"]


def _take(x: Any, axis: int, index: int) -> Any:
    """Slice ``index`` of spatial axis ``axis`` of a channel-first array ``(C, *S)``, channel kept."""
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(x.select(axis + 1, index)).clone()
    return np.take(np.asarray(x), index, axis=axis + 1)


class RandSlicePaird(Randomizable, MapTransform):
    """Pair the labelled slice of a volume with a random slice near it.

    From ``image`` and ``label`` of shape ``(C, D, H, W)`` (channel first) it writes:

    - ``moving``, ``moving_label``: slice ``slice_index`` along spatial axis ``slice_axis``
      (the annotated slice), shape ``(C, H, W)``;
    - ``fixed``: slice ``slice_index + d`` with ``d`` drawn uniformly from
      ``{-radius, ..., radius} \\ {0}`` (clipped to the volume), shape ``(C, H, W)``; with
      ``radius=0`` it is the moving slice itself (the supervised-only baseline ignores it);
    - ``offset``: ``d`` as a one-element tensor;
    - ``fixed_background``: 1 when the fixed slice was drawn as a background slice (below), else 0.

    Extent prior (off by default, not in the paper): with ``background_beyond = R`` and
    probability ``background_prob`` the fixed slice is instead drawn from the slices farther than
    ``R`` from the annotated one, and the trainer takes its label to be all background. It
    encodes one fact an annotator gives for free ("the structure lies within R slices of the one
    I labelled"); label propagation alone cannot teach a segmenter where a structure ends, since a
    warped label never vanishes.

    The label of the fixed slice is never read: in the few-label protocol it does not exist.
    Per-item ``labelled_slice`` / ``labelled_axis`` keys (the ``hippocampus_fewlabel`` datalist)
    override ``slice_index`` / ``slice_axis``.

    Args:
        keys: the image and label keys, in that order.
        slice_index: index of the annotated slice.
        radius: largest distance ``r`` between the annotated and the unlabelled slice.
        slice_axis: spatial axis the volume is sliced along (0 = the first array axis).
        background_beyond: ``R`` of the extent prior, or None (off).
        background_prob: probability of drawing a background slice when the prior is on.
        drop_volumes: remove ``image`` and ``label`` (the whole volumes) from the output, so
            nothing downstream (collation, augmentation, the trainer) ever sees an unlabelled
            slice's label, and batches stay small.

    Raises:
        ValueError: ``keys`` is not two keys, ``radius`` is negative, the image is not 3D, or the
            annotated slice lies outside the volume.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        slice_index: int = 32,
        radius: int = 8,
        slice_axis: int = 0,
        background_beyond: int | None = None,
        background_prob: float = 0.25,
        drop_volumes: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image, label), got {self.keys}.")
        if int(radius) < 0:
            raise ValueError(f"radius must be >= 0, got {radius}.")
        self.slice_index, self.radius, self.slice_axis = int(slice_index), int(radius), int(slice_axis)
        self.drop_volumes = bool(drop_volumes)
        self.background_beyond = None if background_beyond is None else int(background_beyond)
        self.background_prob = float(background_prob)
        if self.background_beyond is not None and self.background_beyond < self.radius:
            raise ValueError(f"background_beyond ({background_beyond}) must be >= radius ({radius}): a slice cannot be both.")
        self._offset = 0
        self._background = False
        self._u = 0.0

    def randomize(self, data: Any = None) -> None:
        self._background = self.background_beyond is not None and self.R.rand() < self.background_prob
        self._u = float(self.R.rand())
        if self.radius == 0:
            self._offset = 0
            return
        d = int(self.R.randint(1, self.radius + 1))
        self._offset = d if self.R.rand() < 0.5 else -d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img_key, lab_key = self.keys
        img, lab = d[img_key], d[lab_key]
        if img.ndim != 4:
            raise ValueError(f"{img_key!r} must be a channel-first 3D volume (C, D, H, W), got shape {tuple(img.shape)}.")
        axis = int(d.get("labelled_axis", self.slice_axis))
        n = int(img.shape[axis + 1])
        index = int(d.get("labelled_slice", self.slice_index))
        if not 0 <= index < n:
            raise ValueError(f"annotated slice {index} is outside a volume with {n} slices along axis {axis}.")
        self.randomize()
        fixed = min(max(index + self._offset, 0), n - 1)
        background = False
        if self._background:
            far = [k for k in range(n) if abs(k - index) > self.background_beyond]
            if far:
                fixed, background = far[min(int(self._u * len(far)), len(far) - 1)], True
        d["moving"] = _take(img, axis, index)
        d["moving_label"] = _take(lab, axis, index)
        d["fixed"] = _take(img, axis, fixed)
        d["offset"] = torch.tensor([fixed - index])
        d["fixed_background"] = torch.tensor([1.0 if background else 0.0])
        if self.drop_volumes:
            del d[img_key], d[lab_key]
        return d


class ResizeInPlaned(Resized):
    """MONAI :class:`~monai.transforms.Resized` of the last two spatial axes to ``spatial_size``.

    Other spatial axes keep their length, so a 2D slice ``(C, H, W)`` becomes
    ``(C, *spatial_size)`` and a volume ``(C, D, H, W)`` becomes ``(C, D, *spatial_size)``; the
    inverse (``Invertd``) is MONAI's.

    Args:
        keys: keys to resize.
        spatial_size: in-plane size ``(H, W)``.
        kwargs: the rest of :class:`~monai.transforms.Resized`'s arguments (``mode``,
            ``align_corners``, ...).
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], **kwargs: Any) -> None:
        size = tuple(int(s) for s in spatial_size)
        if len(size) != 2:
            raise ValueError(f"spatial_size must be the in-plane size (H, W), got {spatial_size}.")
        super().__init__(keys, spatial_size=size, **kwargs)
        self.in_plane = size

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            nd = data[key].ndim - 1
            if nd not in (2, 3):
                raise ValueError(f"{key!r} must be a channel-first 2D or 3D image, got shape {tuple(data[key].shape)}.")
            self.resizer.spatial_size = (-1,) * (nd - 2) + self.in_plane
            break
        return super().__call__(data, lazy=lazy) if lazy is not None else super().__call__(data)
