"""Readers for the HC18 fetal head ultrasound challenge training set (Zenodo record 1327317).

Layout (as in ``../shared/data/hc18``)::

    hc18/training_set/NNN_HC.png                 8-bit grey image (mostly 800x540, not all)
    hc18/training_set/NNN_HC_Annotation.png      head mask (filled, stored RGB 0/255; the original
                                                 release draws the ellipse outline: filled on load)
    hc18/training_set_pixel_size_and_HC.csv      filename, pixel size (mm), head circumference (mm)

Some subjects have several images: ``010_HC.png`` and ``010_2HC.png`` are one subject, ``010``
(the part of the file name before the first ``_``).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "hc18_contour_offset",
    "hc18_grid_floor",
    "label_on_grid",
    "HC18_LABELS",
    "HC18_CSV_NAME",
    "HC18_IMAGE_DIR",
    "hc18_subject",
    "read_hc18_csv",
    "list_hc18",
    "load_hc18_mask",
]

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

HC18_LABELS: dict[int, str] = {0: "background", 1: "fetal head"}
HC18_CSV_NAME = "training_set_pixel_size_and_HC.csv"
HC18_IMAGE_DIR = "training_set"
_ANNOTATION_SUFFIX = "_Annotation"


def hc18_subject(filename: str) -> str:
    """Subject of an HC18 file name: the part before the first ``_`` (``010_2HC.png`` -> ``010``)."""
    name = Path(filename).name
    if "_" not in name:
        raise ValueError(f"HC18 file name {filename!r} has no '_': cannot tell its subject")
    return name.split("_", 1)[0]


def read_hc18_csv(path: str | Path) -> dict[str, dict[str, float]]:
    """Read ``training_set_pixel_size_and_HC.csv``.

    Columns are found by name (case-insensitive: one containing ``filename``, one containing
    ``pixel``, one containing ``circumference``), so spacing variations in the header are fine.

    Args:
        path: the CSV file.

    Returns:
        ``{filename: {"pixel_size_mm": float, "hc_mm": float}}``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a column is missing, a value is not a positive number, or a file name repeats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HC18 CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"HC18 CSV {path} is empty") from None

        def column(word: str) -> int:
            hits = [i for i, h in enumerate(header) if word in h]
            if len(hits) != 1:
                raise ValueError(f"HC18 CSV {path}: expected one column containing {word!r} in header {header}")
            return hits[0]

        i_name, i_px, i_hc = column("filename"), column("pixel"), column("circumference")
        table: dict[str, dict[str, float]] = {}
        for line_no, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                name = row[i_name].strip()
                px, hc = float(row[i_px]), float(row[i_hc])
            except (IndexError, ValueError) as err:
                raise ValueError(f"HC18 CSV {path}, line {line_no}: cannot parse {row!r} ({err})") from None
            if not (px > 0 and hc > 0):
                raise ValueError(f"HC18 CSV {path}, line {line_no}: pixel size and HC must be positive, got {row!r}")
            if name in table:
                raise ValueError(f"HC18 CSV {path}, line {line_no}: file name {name!r} appears twice")
            table[name] = {"pixel_size_mm": px, "hc_mm": hc}
    return table


def list_hc18(root: str | Path) -> list[dict]:
    """List the HC18 training images with their annotation, subject, pixel size, HC and size.

    Args:
        root: the ``hc18`` folder (holding ``training_set/`` and the CSV).

    Returns:
        One dict per image, sorted by file name: ``{"subject": "010", "image": Path,
        "label": Path, "pixel_size_mm": float, "hc_mm": float, "size_hw": (H, W)}``; the size
        comes from each PNG header (not assumed 800x540).

    Raises:
        FileNotFoundError: the folder, the CSV, or an image's annotation is missing.
        ValueError: an image has no CSV row.
    """
    root = Path(root)
    img_dir = root / HC18_IMAGE_DIR
    if not img_dir.is_dir():
        raise FileNotFoundError(
            f"HC18 image folder {img_dir} does not exist; "
            "fetch it with `python tools/prepare_data.py --download --root DIR`"
        )
    table = read_hc18_csv(root / HC18_CSV_NAME)
    items = []
    for image in sorted(img_dir.glob("*.png")):
        if image.name.startswith(".") or image.stem.endswith(_ANNOTATION_SUFFIX):
            continue
        label = image.with_name(f"{image.stem}{_ANNOTATION_SUFFIX}.png")
        if not label.is_file():
            raise FileNotFoundError(f"HC18 image {image} has no annotation: {label} does not exist")
        if image.name not in table:
            raise ValueError(f"HC18 image {image} has no row in {root / HC18_CSV_NAME}")
        with Image.open(image) as im:
            width, height = im.size
        items.append(
            {
                "subject": hc18_subject(image.name),
                "image": image,
                "label": label,
                "pixel_size_mm": table[image.name]["pixel_size_mm"],
                "hc_mm": table[image.name]["hc_mm"],
                "size_hw": (int(height), int(width)),
            }
        )
    if not items:
        raise FileNotFoundError(f"HC18 image folder {img_dir} holds no *_HC.png images")
    missing = sorted(set(table) - {it["image"].name for it in items})
    if missing:
        logger.warning(
            "HC18 CSV %s lists %d file(s) not found in %s, e.g. %s",
            root / HC18_CSV_NAME,
            len(missing),
            img_dir,
            missing[:3],
        )
    return items


def load_hc18_mask(path: str | Path, fill: bool = True) -> np.ndarray:
    """Load an HC18 head annotation as a binary mask.

    Channel 0 > 127 is foreground (single-channel PNGs work too). With ``fill`` the holes of
    the mask are filled, which turns the original release's ellipse outlines into the head
    area and leaves already filled masks unchanged.

    Args:
        path: annotation PNG.
        fill: fill holes (outline -> filled head).

    Returns:
        ``uint8`` array ``(H, W)`` with values {0, 1}.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HC18 annotation {path} does not exist")
    with Image.open(path) as im:
        if im.mode == "P":  # palette: look the colours up
            im = im.convert("RGB")
        elif im.mode == "1":  # bilevel: 0/255
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    mask = arr > 127
    if fill:
        mask = ndimage.binary_fill_holes(mask)
    if not mask.any():
        logger.warning("HC18 annotation %s is empty (no pixel of channel 0 > 127)", path)
    return mask.astype(np.uint8)


def hc18_contour_offset(
    datalist: str | Path, split: str = "training", method: str = "moments", root: str | Path | None = None, limit: int | None = None
) -> float:
    """Calibrate the HC read-out's inward ellipse offset on a split's reference masks.

    HC18's masks are the annotators' ellipse outlines, filled: they reach beyond the ellipse whose
    circumference the CSV gives by half the drawn line. This returns
    :func:`morphzoo.metrics.contour_offset` of the split's masks against their ``hc_mm`` (pixels);
    ``fetal_us_seg``'s ``hc_offset_px`` is this on the training split.

    Args:
        datalist: ``datalists/hc18_seg.json``.
        split: the split whose references are used (training: never the test images).
        method: the :func:`morphzoo.metrics.fit_ellipse` method.
        root: data root (default :func:`morphzoo.paths.data_root`).
        limit: first N items only.
    """
    from morphzoo.metrics.ellipse import contour_offset

    base, items = _split_items(datalist, split, root, limit)
    masks = [load_hc18_mask(base / it["label"]) for it in items]
    return contour_offset(masks, [float(it["hc_mm"]) for it in items], [(float(it["pixel_size_mm"]),) * 2 for it in items], method=method)


def hc18_grid_floor(
    datalist: str | Path,
    split: str = "validation",
    spatial_size: tuple[int, int] = (160, 240),
    offset: float = 0.924,
    method: str = "contour",
    root: str | Path | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """The HC error a perfect network at ``spatial_size`` would make: the read-out's floor on that grid.

    Each reference mask takes ``fetal_us_seg``'s label path into the network's grid
    (:func:`label_on_grid`, tested against ``configs/train.json``), is taken
    back as a prediction is (one-hot probabilities, bilinear with ``align_corners=True``: the
    inverse of the inference ``Resized``; foreground where its probability exceeds 0.5) and read
    out as the bundle reads a prediction (:func:`morphzoo.metrics.head_circumference` with
    ``method`` and ``offset``). What remains against the CSV's ``hc_mm`` is what the grid itself
    costs; a network's error above it is the network's.

    Args:
        datalist: ``datalists/hc18_seg.json``.
        split: the split whose reference masks are used.
        spatial_size: the network's input grid ``(H, W)``.
        offset: the read-out's inward offset in pixels of the original grid (the shipped 0.924).
        method: the :func:`morphzoo.metrics.fit_ellipse` method.
        root: data root (default :func:`morphzoo.paths.data_root`).
        limit: first N items only.

    Returns:
        ``float64`` array ``(N,)``: absolute HC error (mm) per image, in the split's order.

    Raises:
        ValueError: ``spatial_size`` is not two positive sizes.
    """
    import torch
    from monai.transforms import AsDiscrete, Resize

    from morphzoo.metrics.ellipse import head_circumference

    size = tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"hc18_grid_floor: spatial_size must be two positive sizes (H, W), got {tuple(spatial_size)}.")
    base, items = _split_items(datalist, split, root, limit)
    onehot = AsDiscrete(to_onehot=2)
    errors = []
    for it in items:
        mask = torch.from_numpy(load_hc18_mask(base / it["label"]))[None].float()  # (1, H, W)
        back = Resize(mask.shape[1:], mode="bilinear", align_corners=True)(onehot(label_on_grid(mask, size)))  # (2, H, W)
        pred = (back[1] > 0.5).numpy()
        hc = head_circumference(pred, float(it["pixel_size_mm"]), offset, method)
        errors.append(abs(hc - float(it["hc_mm"])))
    return np.asarray(errors, dtype=np.float64)


def label_on_grid(mask: torch.Tensor, spatial_size: tuple[int, int]) -> torch.Tensor:
    """A head mask on the network's grid as ``fetal_us_seg``'s ``configs/train.json`` makes its
    training label: one-hot, bilinear ``Resize`` with ``align_corners=True``, argmax.

    Args:
        mask: ``(1, H, W)`` tensor with values {0, 1}.
        spatial_size: the network's grid ``(h, w)``.

    Returns:
        ``(1, h, w)`` float tensor with values {0, 1}.
    """
    from monai.transforms import AsDiscrete, Resize

    down = Resize(tuple(spatial_size), mode="bilinear", align_corners=True)
    return AsDiscrete(argmax=True)(down(AsDiscrete(to_onehot=2)(mask)))


def _split_items(datalist: str | Path, split: str, root: str | Path | None, limit: int | None) -> tuple[Path, list[dict]]:
    """(data root, the first ``limit`` items of ``split`` in ``datalist``); root defaults to :func:`morphzoo.paths.data_root`."""
    import json

    from morphzoo.paths import data_root

    base = Path(root) if root is not None else data_root()
    return base, json.loads(Path(datalist).read_text())[split][: limit or None]
