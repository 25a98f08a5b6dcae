"""Write a label map in the user's image grid and format (what the app's infer tasks return).

MONAI Label's default writer transposes 2D arrays for PNG output (it assumes MONAI's default
``PILReader(reverse_indexing=True)``, width first); MorphZoo reads PNG rows first (``(H, W)``, as
``morphzoo.transforms.io.read_image`` and the bundles' ``PILReader(reverse_indexing=False)`` do),
so both tasks write their result themselves: PNG in -> 8-bit PNG label of the same size (values are
the label indices, e.g. 0/1), NIfTI in -> NIfTI label with the image's affine and header.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from morphzoo.transforms.io import NIFTI_SUFFIXES, PNG_SUFFIXES, ImageRecord, write_nifti_like

__all__ = ["label_suffix", "write_label"]


def label_suffix(image_path: str | os.PathLike, requested: str | None = None) -> str:
    """Suffix of the returned label: ``requested`` (``.png``; ``.nii.gz``/``.nii`` give ``.nii.gz``) or the image's kind.

    Raises:
        ValueError: an unsupported requested suffix, or an image that is neither PNG/JPEG nor NIfTI.
    """
    if requested:
        req = requested if requested.startswith(".") else f".{requested}"
        if req.lower() not in (".png", *NIFTI_SUFFIXES):
            raise ValueError(f"result_extension {requested!r} is not supported (use .png, .nii.gz or .nii).")
        return ".png" if req.lower() == ".png" else ".nii.gz"  # NIfTI results are always gzipped
    name = str(image_path).lower()
    if name.endswith(PNG_SUFFIXES):
        return ".png"
    if name.endswith(NIFTI_SUFFIXES):
        return ".nii.gz"
    raise ValueError(f"{image_path}: unsupported image type (PNG/JPEG or NIfTI expected).")


def write_label(label: np.ndarray, reference: ImageRecord, suffix: str) -> str:
    """Write ``label`` (on ``reference``'s grid) to a new temporary file with ``suffix``; return its path.

    Raises:
        ValueError: the label is not on the reference grid, or a PNG is asked for a 3D label.
    """
    arr = np.asarray(label)
    if arr.shape != reference.array.shape:
        raise ValueError(f"{reference.path}: label of shape {arr.shape} is not on the image grid {reference.array.shape}.")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{reference.path}: label values {arr.min()}..{arr.max()} do not fit 8 bits.")
    fd, out = tempfile.mkstemp(prefix="morphzoo_label_", suffix=suffix)
    os.close(fd)
    if suffix == ".png":
        if arr.ndim != 2:
            raise ValueError(f"{reference.path}: a PNG label needs a 2D image, got shape {arr.shape}.")
        from PIL import Image

        Image.fromarray(arr.astype(np.uint8)).save(out, format="PNG")
    else:
        write_nifti_like(arr.astype(np.uint8), reference, out)
    return str(Path(out))
