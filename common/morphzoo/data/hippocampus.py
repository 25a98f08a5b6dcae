"""Readers for the hippocampus MRI data set (Medical Segmentation Decathlon Task04).

Two on-disk layouts are understood:

- **Learn2Reg** (what ``../shared/data/hippocampus`` holds, and what
  :func:`convert_msd_hippocampus` writes): ``img/hippocampus_NNN.nii.gz`` and
  ``label/hippocampus_NNN.nii.gz``, every volume 64x64x64, 1 mm.
- **MSD** (the raw Decathlon archive ``Task04_Hippocampus``): ``imagesTr/hippocampus_NNN.nii.gz``
  and ``labelsTr/hippocampus_NNN.nii.gz``, volumes of varying size (about 35x50x35); they are
  padded/cropped, centred, to 64^3 by :func:`pad_crop_center` when loaded or converted.

Labels: 0 background, 1 anterior, 2 posterior hippocampus. Values outside this set (two
Learn2Reg files hold a stray -2) are reported and mapped to background by
:func:`morphzoo.data.labels.clean_label`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResizeWithPadOrCrop

from morphzoo.data.labels import clean_label, unexpected_label_counts

__all__ = [
    "HIPPOCAMPUS_LABELS",
    "HIPPOCAMPUS_SIZE",
    "detect_hippocampus_layout",
    "list_hippocampus",
    "check_label_values",
    "scan_hippocampus_labels",
    "clean_label",
    "pad_crop_center",
    "pad_crop_nifti",
    "load_hippocampus",
    "convert_msd_hippocampus",
]

logger = logging.getLogger(__name__)

HIPPOCAMPUS_LABELS: dict[int, str] = {0: "background", 1: "anterior hippocampus", 2: "posterior hippocampus"}
HIPPOCAMPUS_SIZE: tuple[int, int, int] = (64, 64, 64)

# layout name -> (image folder, label folder)
_LAYOUTS: dict[str, tuple[str, str]] = {"learn2reg": ("img", "label"), "msd": ("imagesTr", "labelsTr")}
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _subject_id(path: Path) -> str | None:
    """``hippocampus_003`` for ``hippocampus_003.nii.gz``; None for non-NIfTI or hidden files (``._*``)."""
    name = path.name
    if name.startswith("."):
        return None
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def detect_hippocampus_layout(root: str | Path) -> str:
    """Tell which layout a hippocampus folder uses.

    Args:
        root: the data set folder (holding ``img/`` + ``label/``, or ``imagesTr/`` + ``labelsTr/``).

    Returns:
        ``"learn2reg"`` or ``"msd"``.

    Raises:
        FileNotFoundError: ``root`` is missing or holds neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"hippocampus folder {root} does not exist")
    for layout, (img_dir, lab_dir) in _LAYOUTS.items():
        if (root / img_dir).is_dir() and (root / lab_dir).is_dir():
            return layout
    raise FileNotFoundError(
        f"hippocampus folder {root} holds neither the Learn2Reg layout (img/ + label/) nor the MSD Task04 "
        "layout (imagesTr/ + labelsTr/); fetch it with `python tools/prepare_data.py --download --root DIR`"
    )


def list_hippocampus(root: str | Path) -> list[dict]:
    """List the subjects of a hippocampus folder, detecting its layout.

    Args:
        root: the data set folder (Learn2Reg or MSD layout, see the module docstring).

    Returns:
        One dict per subject, sorted by subject id: ``{"subject": "hippocampus_003",
        "image": Path, "label": Path, "layout": "learn2reg" | "msd"}``.

    Raises:
        FileNotFoundError: no recognised layout, an image without its label file, or no images.
    """
    root = Path(root)
    layout = detect_hippocampus_layout(root)
    img_dir, lab_dir = (root / d for d in _LAYOUTS[layout])
    items = []
    for image in sorted(img_dir.iterdir()):
        sid = _subject_id(image)
        if sid is None or not image.is_file():
            continue
        label = lab_dir / image.name
        if not label.is_file():
            raise FileNotFoundError(f"hippocampus image {image} has no label file: {label} does not exist")
        items.append({"subject": sid, "image": image, "label": label, "layout": layout})
    if not items:
        raise FileNotFoundError(f"hippocampus folder {img_dir} holds no NIfTI images (*.nii.gz, *.nii)")
    items.sort(key=lambda it: it["subject"])
    logger.debug("found %d hippocampus subjects in %s (%s layout)", len(items), root, layout)
    return items


def check_label_values(path: str | Path, allowed: Sequence[int] = (0, 1, 2)) -> dict[int | float, int]:
    """Count the voxels of a label file whose value is not in ``allowed``.

    Args:
        path: a NIfTI label file.
        allowed: the admissible label values.

    Returns:
        ``{value: voxel_count}`` of the unexpected values; empty when the file is clean.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    return unexpected_label_counts(np.asanyarray(nib.load(str(path)).dataobj), allowed)


def scan_hippocampus_labels(root: str | Path, allowed: Sequence[int] = (0, 1, 2)) -> dict[str, dict[int | float, int]]:
    """Check every label file of a hippocampus folder.

    Args:
        root: the data set folder (either layout).
        allowed: the admissible label values.

    Returns:
        ``{label_path (str): {value: voxel_count}}`` for the defective files only, sorted by path.
    """
    report = {}
    for item in list_hippocampus(root):
        counts = check_label_values(item["label"], allowed)
        if counts:
            report[str(item["label"])] = counts
    return report


def pad_crop_center(array: np.ndarray, spatial_size: Sequence[int] = HIPPOCAMPUS_SIZE, value: float = 0) -> np.ndarray:
    """Pad and/or crop a volume, centred, to ``spatial_size`` (MONAI ``ResizeWithPadOrCrop``, symmetric).

    Args:
        array: array without channel axis, ``len(spatial_size)`` dimensions.
        spatial_size: target size per axis.
        value: padding value.

    Returns:
        numpy array of shape ``spatial_size``, same dtype.

    Raises:
        ValueError: the array's dimension differs from ``len(spatial_size)``.
    """
    array = np.asarray(array)
    if array.ndim != len(spatial_size):
        raise ValueError(f"pad_crop_center: array has shape {array.shape}, expected {len(spatial_size)} dimensions")
    out = ResizeWithPadOrCrop(tuple(int(s) for s in spatial_size), mode="constant", value=value)(array[None])
    return np.asarray(out[0].cpu().numpy() if isinstance(out, torch.Tensor) else out[0]).astype(array.dtype, copy=False)


def pad_crop_nifti(image: nib.Nifti1Image, spatial_size: Sequence[int] = HIPPOCAMPUS_SIZE) -> nib.Nifti1Image:
    """Pad/crop a NIfTI image, centred, to ``spatial_size``, shifting its affine so world positions are kept.

    Args:
        image: the input image (3D).
        spatial_size: target size per axis.

    Returns:
        A new ``Nifti1Image`` with the data padded/cropped and the affine translated accordingly.
    """
    data = np.asanyarray(image.dataobj)
    if data.ndim != len(spatial_size):
        raise ValueError(
            f"pad_crop_nifti: {image.get_filename() or 'image'} has shape {data.shape}, "
            f"expected {len(spatial_size)} dimensions"
        )
    mt = MetaTensor(torch.as_tensor(data[None].copy()), affine=torch.as_tensor(image.affine, dtype=torch.float64))
    out = ResizeWithPadOrCrop(tuple(int(s) for s in spatial_size), mode="constant", value=0)(mt)
    affine = out.affine.cpu().numpy().astype(np.float64)
    header = image.header.copy()
    new = nib.Nifti1Image(out[0].cpu().numpy().astype(data.dtype, copy=False), affine, header)
    new.set_qform(affine, code=int(image.header["qform_code"]) or 1)
    new.set_sform(affine, code=int(image.header["sform_code"]) or 1)
    return new


def load_hippocampus(
    item: dict,
    spatial_size: Sequence[int] | None = HIPPOCAMPUS_SIZE,
    clean: bool = True,
    allowed: Sequence[int] = (0, 1, 2),
) -> tuple[np.ndarray, np.ndarray]:
    """Load one subject (an item of :func:`list_hippocampus`) as arrays.

    Args:
        item: dict with ``image`` and ``label`` paths.
        spatial_size: pad/crop both volumes, centred, to this size (``None``: keep the file's size).
            Needed for the MSD layout, a no-op for Learn2Reg volumes already 64^3.
        clean: map unexpected label values to 0 (with a WARNING naming the file).
        allowed: the admissible label values.

    Returns:
        ``(image float32, label int)`` arrays.
    """
    image = np.asanyarray(nib.load(str(item["image"])).dataobj).astype(np.float32)
    label = np.asanyarray(nib.load(str(item["label"])).dataobj)
    if image.shape != label.shape:
        raise ValueError(
            f"hippocampus image {item['image']} has shape {image.shape} but its label {item['label']} has {label.shape}"
        )
    if clean:
        label = clean_label(label, allowed, source=str(item["label"]))
    if spatial_size is not None:
        image = pad_crop_center(image, spatial_size)
        label = pad_crop_center(label, spatial_size)
    return image, label


def convert_msd_hippocampus(
    src: str | Path, dst: str | Path, spatial_size: Sequence[int] = HIPPOCAMPUS_SIZE, overwrite: bool = False
) -> list[dict]:
    """Convert the MSD Task04 layout to the Learn2Reg-like layout used by MorphZoo.

    Every ``imagesTr``/``labelsTr`` pair is padded/cropped, centred, to ``spatial_size`` and written
    as ``dst/img/<id>.nii.gz`` (float32) and ``dst/label/<id>.nii.gz`` (label dtype kept), with
    affines shifted to keep world positions. Label values are kept as they are (check them
    with :func:`scan_hippocampus_labels`).

    Args:
        src: folder in MSD layout (``Task04_Hippocampus``).
        dst: output folder (created).
        spatial_size: target size.
        overwrite: rewrite files that already exist.

    Returns:
        :func:`list_hippocampus` of ``dst``.
    """
    src, dst = Path(src), Path(dst)
    items = list_hippocampus(src)
    if items[0]["layout"] != "msd":
        raise ValueError(f"convert_msd_hippocampus: {src} is not in MSD layout (imagesTr/ + labelsTr/)")
    (dst / "img").mkdir(parents=True, exist_ok=True)
    (dst / "label").mkdir(parents=True, exist_ok=True)
    for item in items:
        out_img = dst / "img" / f"{item['subject']}.nii.gz"
        out_lab = dst / "label" / f"{item['subject']}.nii.gz"
        if out_img.exists() and out_lab.exists() and not overwrite:
            continue
        img = nib.load(str(item["image"]))
        img = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32), img.affine, img.header)
        img.header.set_data_dtype(np.float32)
        nib.save(pad_crop_nifti(img, spatial_size), str(out_img))
        nib.save(pad_crop_nifti(nib.load(str(item["label"])), spatial_size), str(out_lab))
    logger.info("converted %d MSD hippocampus subjects from %s to %s (%s)", len(items), src, dst, spatial_size)
    return list_hippocampus(dst)
