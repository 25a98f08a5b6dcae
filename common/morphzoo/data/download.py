"""Download helpers for users with internet access: fetch the public data sets into a data root.

- :func:`download_msd_hippocampus`: the Medical Segmentation Decathlon ``Task04_Hippocampus``
  archive (URL and MD5 from ``monai.apps.DecathlonDataset``), converted to the 64^3
  Learn2Reg-like layout ``<root>/hippocampus/{img,label}/hippocampus_NNN.nii.gz``.
- :func:`download_hc18`: the HC18 training set from Zenodo record 1327317, laid out as
  ``<root>/hc18/training_set/*.png`` + ``<root>/hc18/training_set_pixel_size_and_HC.csv``;
  the annotations (ellipse outlines in the original release) are stored filled, RGB 0/255,
  as in the shared development copy.

Archives are kept in ``<root>/downloads/``. Nothing here runs at import time; the tests
replace :func:`download_url` with a function that copies a small generated archive.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from monai.apps import DecathlonDataset
from monai.apps.utils import download_url, extractall
from PIL import Image

from morphzoo.data.hc18 import HC18_CSV_NAME, HC18_IMAGE_DIR, list_hc18, load_hc18_mask
from morphzoo.data.hippocampus import (
    HIPPOCAMPUS_SIZE,
    convert_msd_hippocampus,
    detect_hippocampus_layout,
    list_hippocampus,
)

__all__ = [
    "MSD_TASK",
    "HC18_ZENODO_RECORD",
    "HC18_URLS",
    "download_msd_hippocampus",
    "download_hc18",
    "download_datasets",
]

logger = logging.getLogger(__name__)

MSD_TASK = "Task04_Hippocampus"
HC18_ZENODO_RECORD = 1327317
HC18_URLS: dict[str, str] = {
    "training_set.zip": f"https://zenodo.org/records/{HC18_ZENODO_RECORD}/files/training_set.zip?download=1",
    HC18_CSV_NAME: f"https://zenodo.org/records/{HC18_ZENODO_RECORD}/files/{HC18_CSV_NAME}?download=1",
}


def _has_learn2reg_hippocampus(folder: Path) -> bool:
    try:
        return detect_hippocampus_layout(folder) == "learn2reg" and bool(list_hippocampus(folder))
    except FileNotFoundError:
        return False


def download_msd_hippocampus(root: str | Path, keep_raw: bool = False, progress: bool = True) -> Path:
    """Download MSD Task04 hippocampus into ``root`` and convert it to the 64^3 Learn2Reg-like layout.

    Skips everything when ``<root>/hippocampus`` already holds the Learn2Reg layout.

    Args:
        root: data root (created if needed).
        keep_raw: keep the extracted raw MSD folder (``<root>/downloads/Task04_Hippocampus``).
        progress: show a download progress bar.

    Returns:
        ``<root>/hippocampus``.
    """
    root = Path(root).expanduser().resolve()
    dst = root / "hippocampus"
    if _has_learn2reg_hippocampus(dst):
        logger.info("hippocampus data already present in %s, nothing to download", dst)
        return dst
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{MSD_TASK}.tar"
    download_url(
        DecathlonDataset.resource[MSD_TASK],
        filepath=archive,
        hash_val=DecathlonDataset.md5[MSD_TASK],
        hash_type="md5",
        progress=progress,
    )
    extracted = downloads / "msd_extract"
    if extracted.exists():
        shutil.rmtree(extracted)
    extractall(archive, output_dir=extracted, has_base=False)  # hash checked by download_url
    raw = extracted / MSD_TASK
    if not (raw / "imagesTr").is_dir():
        raise FileNotFoundError(f"archive {archive} did not hold {MSD_TASK}/imagesTr (extracted to {extracted})")
    convert_msd_hippocampus(raw, dst, spatial_size=HIPPOCAMPUS_SIZE)
    if not keep_raw:
        shutil.rmtree(extracted)
    logger.info("MSD hippocampus ready in %s", dst)
    return dst


def _find_image_folder(folder: Path) -> Path:
    """The folder of an extracted archive that holds the ``*HC.png`` images (skipping ``__MACOSX``)."""
    for png in sorted(folder.rglob("*HC.png")):
        if "__MACOSX" not in png.parts and not png.name.startswith("."):
            return png.parent
    raise FileNotFoundError(f"no HC18 images (*HC.png) found under {folder}")


def download_hc18(root: str | Path, fill_annotations: bool = True, progress: bool = True) -> Path:
    """Download the HC18 training set (Zenodo record 1327317) into ``<root>/hc18``.

    Skips everything when ``<root>/hc18`` already lists correctly.

    Args:
        root: data root (created if needed).
        fill_annotations: rewrite each annotation as a filled head mask, RGB 0/255 (the layout
            of the shared copy); the original release draws the ellipse outline only.
        progress: show a download progress bar.

    Returns:
        ``<root>/hc18``.
    """
    root = Path(root).expanduser().resolve()
    dst = root / "hc18"
    try:
        list_hc18(dst)
        logger.info("HC18 data already present in %s, nothing to download", dst)
        return dst
    except (FileNotFoundError, ValueError):
        pass
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / "hc18_training_set.zip"
    download_url(HC18_URLS["training_set.zip"], filepath=archive, progress=progress)
    extracted = downloads / "hc18_extract"
    if extracted.exists():
        shutil.rmtree(extracted)
    extractall(archive, output_dir=extracted, has_base=False)
    src = _find_image_folder(extracted)
    out_dir = dst / HC18_IMAGE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for png in sorted(src.glob("*.png")):
        if png.name.startswith("."):
            continue
        shutil.move(str(png), str(out_dir / png.name))
        n += 1
    shutil.rmtree(extracted)
    download_url(HC18_URLS[HC18_CSV_NAME], filepath=dst / HC18_CSV_NAME, progress=progress)
    if fill_annotations:
        for ann in sorted(out_dir.glob("*_Annotation.png")):
            mask = load_hc18_mask(ann, fill=True) * np.uint8(255)
            Image.fromarray(np.repeat(mask[..., None], 3, axis=2)).save(ann)
    items = list_hc18(dst)
    logger.info("HC18 ready in %s: %d files moved, %d images listed", dst, n, len(items))
    return dst


def download_datasets(root: str | Path, datasets: tuple[str, ...] = ("hippocampus", "hc18")) -> dict[str, Path]:
    """Fetch several data sets into ``root``; returns ``{name: folder}``.

    Args:
        root: data root.
        datasets: any of ``"hippocampus"``, ``"hc18"``.
    """
    helpers = {"hippocampus": download_msd_hippocampus, "hc18": download_hc18}
    unknown = [d for d in datasets if d not in helpers]
    if unknown:
        raise ValueError(f"unknown data set(s) {unknown}; expected some of {sorted(helpers)}")
    return {d: helpers[d](root) for d in datasets}
