"""Validated reading and atomic writing of images and label maps (NIfTI, PNG).

Every reader returns an :class:`ImageRecord`: the spatial array in array-axis order (PNG:
``(H, W)`` rows first; NIfTI: the stored voxel order), the 4x4 affine, the voxel spacing and
the original header, so that results can be written back in the input's own grid and header.
Bad input raises :class:`InputError` naming the file and the problem; nothing is written.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from morphzoo.data.labels import unexpected_label_counts

__all__ = [
    "InputError",
    "ImageRecord",
    "read_image",
    "read_label",
    "write_nifti_like",
    "write_png",
    "atomic_path",
    "atomic_output_dir",
    "check_outputs_free",
    "NIFTI_SUFFIXES",
    "PNG_SUFFIXES",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PNG_SUFFIXES = (".png", ".jpg", ".jpeg")


class InputError(ValueError):
    """A user-supplied file or argument cannot be used; the message names the file and the problem."""


@dataclass
class ImageRecord:
    """An image read from disk together with its geometry.

    Attributes:
        array: spatial array ``(H, W)`` or ``(H, W, D)`` (array-axis order), float32 for images.
        affine: 4x4 voxel-to-world matrix (NIfTI's; for PNG ``diag(spacing, 1)``).
        spacing: voxel size per array axis (mm where known, else 1).
        path: the file it came from.
        kind: ``"nifti"`` or ``"png"``.
        header: the NIfTI header (``None`` for PNG), reused when writing results.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    path: Path
    kind: str
    header: Any = field(default=None, repr=False)

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PNG_SUFFIXES):
        return "png"
    raise InputError(f"{path}: unsupported file type (expected NIfTI {NIFTI_SUFFIXES} or PNG/JPEG {PNG_SUFFIXES}).")


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], Any]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as e:
        raise InputError(f"{path}: cannot be read as NIfTI; the file is corrupt or truncated ({type(e).__name__}: {e}).") from e
    nd = min(3, len(img.shape))
    spacing = tuple(float(s) for s in img.header.get_zooms()[:nd])
    return data, np.asarray(img.affine, dtype=np.float64), spacing, img.header


def _read_png(path: Path, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            data = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise InputError(f"{path}: cannot be read as an image; the file is corrupt or truncated ({e}).") from e
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0)
    affine = np.diag([sp[0], sp[1], 1.0, 1.0])
    return data, affine, sp, None


def _squeeze_channels(data: np.ndarray, path: Path, kind: str, what: str, spatial_dims: int | None) -> np.ndarray:
    """Reduce the raw array to its spatial part; reject arrays with several real channels."""
    if kind == "png":
        if data.ndim == 3:  # RGB(A) PNG
            if what == "label":
                return data[..., 0]  # filled masks stored as RGB: channel 0 (HC18 convention)
            rgb = data[..., :3].astype(np.float32)
            if not (np.allclose(rgb[..., 0], rgb[..., 1]) and np.allclose(rgb[..., 0], rgb[..., 2])):
                raise InputError(
                    f"{path}: colour image with {data.shape[-1]} channels of different content; "
                    "the networks take 1 grey channel."
                )
            return data[..., 0]
        return data
    # NIfTI: drop trailing singleton axes beyond the spatial ones (e.g. (X, Y, Z, 1)).
    while data.ndim > 2 and data.shape[-1] == 1 and (spatial_dims is None or data.ndim > spatial_dims):
        data = data[..., 0]
    if data.ndim > 3:
        raise InputError(
            f"{path}: array of shape {tuple(data.shape)} has {int(np.prod(data.shape[3:]))} channels/time points; "
            f"the network takes a single-channel 2D or 3D {what}."
        )
    return data


def read_image(
    path: str | os.PathLike,
    *,
    spatial_dims: int | None = None,
    spacing: Sequence[float] | None = None,
    what: str = "image",
    allow_constant: bool = False,
) -> ImageRecord:
    """Read and validate a single-channel 2D or 3D image.

    Args:
        path: NIfTI (``.nii``/``.nii.gz``) or PNG/JPEG file.
        spatial_dims: expected number of spatial dimensions (2 or 3); ``None`` accepts both.
        spacing: pixel size for PNG files (PNG stores none); ignored for NIfTI.
        what: how the file is named in error messages (``"moving image"``, ``"fixed label"``...).
        allow_constant: accept an image whose values are all equal (label maps may be all
            background; an image with no contrast cannot be registered or segmented).

    Returns:
        An :class:`ImageRecord` with a float32 array.

    Raises:
        InputError: missing, empty, corrupt/truncated file; unsupported type; several channels;
            wrong dimensionality; NaN or Inf values; a constant image (unless ``allow_constant``).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} file does not exist.")
    if p.is_dir():
        raise InputError(f"{p}: {what} path is a folder, expected a file.")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: {what} file is empty.")
    kind = _kind(p)
    if kind == "nifti":
        data, affine, sp, header = _read_nifti(p)
    else:
        data, affine, sp, header = _read_png(p, spacing)
    data = _squeeze_channels(np.asarray(data), p, kind, what, spatial_dims)
    if data.ndim not in (2, 3):
        raise InputError(f"{p}: {what} has shape {tuple(data.shape)}; expected a 2D or 3D image.")
    if spatial_dims is not None and data.ndim != spatial_dims:
        raise InputError(
            f"{p}: {what} is {data.ndim}D (shape {tuple(data.shape)}) but {spatial_dims}D input is required "
            f"(spatial_dims={spatial_dims})."
        )
    arr = data.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise InputError(f"{p}: {what} contains {n_nan} NaN and {n_inf} Inf values.")
    if not allow_constant and arr.size and float(arr.min()) == float(arr.max()):
        raise InputError(f"{p}: {what} is constant (every value is {float(arr.min()):g}); there is nothing to register or segment.")
    return ImageRecord(array=arr, affine=affine, spacing=tuple(sp[: arr.ndim]), path=p, kind=kind, header=header)


def read_label(
    path: str | os.PathLike,
    *,
    allowed: Sequence[int] | None = None,
    spatial_dims: int | None = None,
    spacing: Sequence[float] | None = None,
    what: str = "label",
    binarize_png: bool = True,
) -> ImageRecord:
    """Read and validate an integer label map.

    PNG masks stored as 0/255 (any channel count: channel 0 is used) are binarised at 127 when
    ``binarize_png`` is set; PNG label maps whose values are all <= 127 (e.g. 0, 1, 2) are kept.

    Args:
        path: NIfTI or PNG label file.
        allowed: the declared label values; any other value raises.
        spatial_dims: expected number of spatial dimensions.
        spacing: pixel size for PNG files.
        what: how the file is named in error messages.
        binarize_png: map PNG values ``> 127`` to 1 and the rest to 0.

    Raises:
        InputError: as :func:`read_image`, plus non-integer values or values outside ``allowed``.
    """
    rec = read_image(path, spatial_dims=spatial_dims, spacing=spacing, what=what, allow_constant=True)
    arr = rec.array
    if rec.kind == "png" and binarize_png and arr.max() > 127:  # 0/255 masks; small label values are kept
        arr = (arr > 127).astype(np.float32)
    if not np.all(np.equal(np.round(arr), arr)):
        raise InputError(f"{rec.path}: {what} holds non-integer values; expected an integer label map.")
    if allowed is not None:
        bad = unexpected_label_counts(arr, allowed)
        if bad:
            desc = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad.items()))
            raise InputError(
                f"{rec.path}: {what} holds values outside the declared labels {sorted(int(a) for a in allowed)}: {desc}."
            )
    rec.array = arr.astype(np.int16)
    return rec


def _vector_nifti_array(array: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(N, *S) channel-first field -> NIfTI vector layout (X, Y, Z, 1, N)."""
    n = array.shape[0]
    moved = np.moveaxis(array, 0, -1)  # (*S, N)
    spatial = moved.shape[:-1]
    shape = tuple(spatial) + (1,) * (3 - spatial_dims) + (1, n)
    return moved.reshape(shape)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary file name next to ``path`` (same folder, same ``suffix``) for a writer; on a clean
    exit it replaces ``path`` in one rename, on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_nifti_like(array: np.ndarray, reference: ImageRecord, path: str | os.PathLike, *, vector: bool = False) -> Path:
    """Write ``array`` in the reference image's grid and header, atomically.

    Args:
        array: ``(*S)`` scalar image on the reference grid, or with ``vector=True`` a ``(N, *S)``
            channel-first field stored with the NIfTI vector intent as ``(X, Y, Z, 1, N)``.
        reference: the image whose affine and header the output keeps.
        path: destination (``.nii.gz``); written to a temporary file then renamed.
        vector: write a displacement field.
    """
    import nibabel as nib

    path = Path(path)
    data = _vector_nifti_array(array, reference.spatial_dims) if vector else np.asarray(array)
    if reference.kind == "nifti" and reference.header is not None:
        header = reference.header.copy()
        header.set_data_dtype(data.dtype)
    else:
        header = None
    img = nib.Nifti1Image(data, reference.affine, header=header)
    if header is not None:
        # keep the reference's codes (e.g. qform 0 + sform 2); only a header with neither gets both = 1
        qcode, scode = int(reference.header["qform_code"]), int(reference.header["sform_code"])
        if qcode == 0 and scode == 0:
            qcode = scode = 1
        img.set_qform(reference.affine, code=qcode)
        img.set_sform(reference.affine, code=scode)
    else:
        img.set_qform(reference.affine, code=1)
        img.set_sform(reference.affine, code=1)
    if vector:
        img.header.set_intent("vector")
    else:
        img.header.set_intent("none")
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)
    return path


def write_png(array: np.ndarray, path: str | os.PathLike, scale: bool = True) -> Path:
    """Write a 2D array as 8-bit PNG, atomically: min-max scaled to 0..255, or with ``scale=False``
    its values rounded and clipped to 0..255 as they are (label maps)."""
    from PIL import Image

    path = Path(path)
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"write_png expects a 2D array, got shape {arr.shape}.")
    lo, hi = float(arr.min()), float(arr.max())
    if not scale:
        scaled = arr
    else:
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return path


def check_outputs_free(output_dir: str | os.PathLike, names: Sequence[str], overwrite: bool = False) -> None:
    """Raise if any of ``names`` already exists in ``output_dir`` and ``overwrite`` is not set."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder.")
    if overwrite:
        return
    existing = [n for n in names if (out / n).exists()]
    if existing:
        raise InputError(
            f"{out}: output files already exist ({', '.join(existing)}); pass --overwrite true to replace them."
        )


class atomic_output_dir:
    """Context manager giving a temporary folder whose files are moved into ``output_dir`` on success.

    On an exception nothing reaches ``output_dir`` (the temporary folder is removed).

    Example::

        with atomic_output_dir(out) as tmp:
            write_nifti_like(arr, ref, tmp / "warped.nii.gz")
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.output_dir.name}.tmp-", dir=self.output_dir.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.tmp is not None
        try:
            if exc_type is None:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                for f in sorted(self.tmp.iterdir()):
                    os.replace(f, self.output_dir / f.name)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
