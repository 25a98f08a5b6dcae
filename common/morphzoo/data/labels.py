"""Label-map sanity checks: find values outside the allowed label set, report them, map them to background.

Real datasets carry defects: two Learn2Reg hippocampus label files hold a stray ``-2``.
The loaders never drop such a value silently: :func:`clean_label` and the dictionary
transform :class:`MapUnexpectedLabelsd` log a WARNING naming the file, the value and the
voxel count, then set those voxels to the background value.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["unexpected_label_counts", "clean_label", "MapUnexpectedLabelsd"]

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _value_key(value: Any) -> int | float:
    """A JSON/log-friendly scalar: int when the value is integral, else float."""
    value = float(value)
    return int(value) if value.is_integer() else value


def unexpected_label_counts(
    array: np.ndarray | torch.Tensor, allowed: Sequence[int] = (0, 1, 2)
) -> dict[int | float, int]:
    """Count the voxels whose value is not in ``allowed``.

    Args:
        array: label map (numpy array or tensor, any shape).
        allowed: the admissible label values.

    Returns:
        ``{value: voxel_count}`` for every unexpected value (empty when the map is clean);
        integral values are returned as ``int``. NaN counts as unexpected.
    """
    arr = _as_numpy(array)
    bad = ~np.isin(arr, np.asarray(allowed))
    if not bad.any():
        return {}
    values, counts = np.unique(arr[bad], return_counts=True)
    out: dict[int | float, int] = {}
    for v, c in zip(values.tolist(), counts.tolist()):
        key = _value_key(v)
        out[key] = out.get(key, 0) + int(c)
    return out


def clean_label(
    array: ArrayT, allowed: Sequence[int] = (0, 1, 2), source: str = "<array>", background: int = 0
) -> ArrayT:
    """Map label values outside ``allowed`` to ``background``, logging a WARNING for each value found.

    The warning names ``source`` (the file the map came from), the value and its voxel
    count, e.g. ``label file .../hippocampus_003.nii.gz: value -2 in 1 voxel(s) is not in the
    allowed labels (0, 1, 2); mapped to background 0``.

    Args:
        array: label map (numpy array or tensor; a MetaTensor keeps its metadata).
        allowed: the admissible label values.
        source: where the map came from (file name), used in the warning.
        background: value the unexpected voxels are set to.

    Returns:
        A cleaned copy of the same type (the input itself when nothing had to change).
    """
    counts = unexpected_label_counts(array, allowed)
    if not counts:
        return array
    for value, count in counts.items():
        logger.warning(
            "label file %s: value %s in %d voxel(s) is not in the allowed labels %s; mapped to background %s",
            source,
            value,
            count,
            tuple(allowed),
            background,
        )
    if isinstance(array, torch.Tensor):
        bad = ~torch.isin(array, torch.as_tensor(list(allowed), dtype=array.dtype, device=array.device))
        out = array.clone()
        out[bad] = background
        return out
    arr = np.array(array, copy=True)
    arr[~np.isin(arr, np.asarray(allowed))] = background
    return arr


def _source_name(value: Any, data: Mapping[Hashable, Any], key: Hashable, meta_key_postfix: str) -> str:
    """File name of a loaded image: MetaTensor meta, else the ``<key>_meta_dict`` entry, else the key."""
    if isinstance(value, MetaTensor):
        name = value.meta.get("filename_or_obj")
        if name:
            return str(name)
    meta = data.get(f"{key}_{meta_key_postfix}")
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return f"<key {key!r}>"


class MapUnexpectedLabelsd(MapTransform):
    """Dictionary transform: map label values outside ``allowed`` to background, with a WARNING.

    Put it right after ``LoadImaged`` in a chain. The warning names the file (read from the
    MetaTensor meta ``filename_or_obj``, or ``<key>_meta_dict`` for plain arrays), the value
    and the voxel count. Example::

        Compose([LoadImaged(["moving_label", "fixed_label"]),
                 MapUnexpectedLabelsd(["moving_label", "fixed_label"], allowed=(0, 1, 2))])

    Args:
        keys: keys of the label maps.
        allowed: the admissible label values.
        background: value the unexpected voxels are set to.
        meta_key_postfix: postfix of the meta dictionary key for non-MetaTensor inputs.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        allowed: Sequence[int] = (0, 1, 2),
        background: int = 0,
        meta_key_postfix: str = "meta_dict",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = tuple(allowed)
        self.background = background
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            source = _source_name(value, d, key, self.meta_key_postfix)
            d[key] = clean_label(value, self.allowed, source=source, background=self.background)
        return d
