"""Segmentation inference for MorphZoo segmentation bundles: one image or a test split.

The bundle's own MONAI ``preprocessing`` / ``inferer`` / ``postprocessing`` (the keys MONAI Label's
bundle tasks read) do the work, so the bundle command line and a MONAI Label server run the same
transforms. Output masks are in each input image's original grid and header; for a head mask an
ellipse is fitted and the head circumference reported (HC18's clinical read-out).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.data import decollate_batch
from monai.inferers import Inferer, SimpleInferer

from morphzoo.data.labels import clean_label
from morphzoo.inference.registrar import sync_device
from morphzoo.inference.runner import cli_flag
from morphzoo.metrics.ellipse import contour_offset, fill_ellipse, fit_ellipse
from morphzoo.metrics.labels import label_overlap_and_distance, segmentation_scores
from morphzoo.transforms.subjects import resolve_path
from morphzoo.transforms.io import (
    ImageRecord,
    InputError,
    atomic_output_dir,
    check_outputs_free,
    read_image,
    read_label,
    write_nifti_like,
    write_png,
)

__all__ = [
    "Segmenter",
    "SegmentationResult",
    "SegmentationRunner",
    "evaluate_segmentation",
    "calibrate_hc_offset",
    "segmentation_metrics",
    "SEGMENTATION_METRICS",
]

logger = logging.getLogger(__name__)

SEGMENTATION_METRICS = ("dice", "iou", "precision", "recall", "rmse", "hd95", "assd", "hc_abs_error_mm", "time_ms")
OUTPUT_NAMES = ("mask.nii.gz", "overlay.png", "result.json")


def segmentation_metrics(labels: Sequence[int] = (0, 1)) -> tuple[str, ...]:
    """Metric names :func:`evaluate_segmentation` reports: :data:`SEGMENTATION_METRICS` for a
    binary task; for more labels, Dice (mean and per label), HD, HD95 and ASSD (means over the
    labels, mm) and the time."""
    fg = [int(v) for v in labels if int(v) != 0]
    if len(fg) <= 1:
        return SEGMENTATION_METRICS
    return ("dice", *[f"dice_{v}" for v in fg], "hd", "hd95", "assd", "time_ms")


class SegmentationResult(dict):
    """``prob`` (foreground probability, original grid), ``mask`` (label map: 0/1, or 0..C-1 for a
    multi-class network), ``ellipse``, ``hc``, ``time_ms``."""


class Segmenter:
    """Segment a 2D/3D image with a bundle's network and transforms, in the image's original grid.

    A two-class network gives a binary mask (foreground probability >= 0.5) and, in 2D, a fitted
    ellipse and its circumference; a network with more classes gives the argmax label map
    (labels ``0..C-1``) and ``prob`` = 1 - P(background).

    Args:
        network: image -> logits ``(B, num_classes, *S)``.
        preprocessing: the bundle's MONAI dict transform for ``{"image": path}`` (load, scale,
            resize); it must keep MetaTensor metadata so ``postprocessing`` can invert it.
        postprocessing: dict transform on ``{"pred": logits, "image": ...}`` that returns ``pred``
            as per-class probabilities in the original grid (softmax + ``Invertd``).
        inferer: MONAI inferer (default :class:`monai.inferers.SimpleInferer`).
        device: torch device.
        spatial_dims: 2 or 3; inputs of another dimensionality are rejected. ``None`` accepts both
            (a 2D network run slice by slice on volumes, e.g. with
            :class:`morphzoo.inference.SliceWiseInferer`).
        foreground: class channel whose probability is the foreground map (two-class networks).
        hc_offset_px: inward shift (pixels of the input image) of the ellipse fitted to a 2D
            mask before its circumference is taken; HC18's filled masks reach 1.38 px beyond
            the reference ellipse (:func:`morphzoo.metrics.contour_offset`).
        hc_fit: the :func:`morphzoo.metrics.fit_ellipse` method, ``"moments"`` or ``"contour"``.
        ellipse_mask: replace a 2D binary mask by its fitted ellipse, filled
            (:func:`morphzoo.metrics.fill_ellipse`, method ``hc_fit``): a shape prior for
            structures that are ellipses by definition (HC18's reference masks are).
    """

    def __init__(
        self,
        network: nn.Module,
        preprocessing: Callable,
        postprocessing: Callable,
        inferer: Inferer | None = None,
        device: str | torch.device | None = None,
        spatial_dims: int | None = 2,
        foreground: int = 1,
        hc_offset_px: float = 0.0,
        hc_fit: str = "moments",
        ellipse_mask: bool = False,
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.postprocessing = postprocessing
        self.inferer = inferer or SimpleInferer()
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.spatial_dims = spatial_dims
        self.foreground = foreground
        self.hc_offset_px = float(hc_offset_px)
        if hc_fit not in ("moments", "contour"):
            raise ValueError(f"hc_fit must be 'moments' or 'contour', got {hc_fit!r}.")
        self.hc_fit = hc_fit
        self.ellipse_mask = cli_flag(ellipse_mask, "ellipse_mask")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def _sync(self) -> None:
        sync_device(self.device)

    @torch.no_grad()
    def predict(self, path: str | Path) -> tuple[np.ndarray, float]:
        """Class probabilities ``(C, *S)`` in the image's original grid, and the time in ms."""
        self.network.eval()
        self._sync()
        t0 = time.perf_counter()
        data = self.preprocessing({"image": str(path)})
        img = data["image"]
        batch = img.unsqueeze(0).to(self.device)
        logits = self.inferer(batch, self.network)
        data["pred"] = decollate_batch(logits)[0]
        data = self.postprocessing(data)
        probs = data["pred"]
        self._sync()
        ms = (time.perf_counter() - t0) * 1000.0
        return np.asarray(torch.as_tensor(probs).detach().cpu().float().numpy()), ms

    def segment(self, path: str | Path, spacing: Sequence[float] | None = None) -> tuple[SegmentationResult, ImageRecord]:
        """Validate and segment one image; fit the ellipse and the circumference on 2D masks.

        Args:
            path: NIfTI or PNG/JPEG image.
            spacing: pixel size for PNG files (HC18: the CSV's mm per pixel); NIfTI uses its header.

        Raises:
            InputError: missing/corrupt file, wrong dimensionality, several channels, NaN/Inf.
        """
        rec = read_image(path, spatial_dims=self.spatial_dims, spacing=spacing, what="image")
        probs, ms = self.predict(rec.path)
        if probs.shape[1:] != rec.array.shape:
            raise RuntimeError(f"{rec.path}: prediction of shape {probs.shape[1:]} is not in the image grid {rec.array.shape}.")
        if probs.shape[0] > 2:
            mask = np.argmax(probs, axis=0).astype(np.uint8)
            prob = 1.0 - probs[0]
        else:
            prob = probs[self.foreground]
            mask = (prob >= 0.5).astype(np.uint8)
        res = SegmentationResult(prob=prob, mask=mask, time_ms=ms, ellipse=None, hc=float("nan"))
        if rec.array.ndim == 2 and probs.shape[0] == 2:
            t0 = time.perf_counter()
            fit = fit_ellipse(mask, rec.spacing, self.hc_offset_px, self.hc_fit)  # on the network's mask
            if fit is not None:
                res["ellipse"], res["hc"] = fit
            if self.ellipse_mask:
                res["mask"] = fill_ellipse(mask, rec.spacing, self.hc_fit)
                res["time_ms"] += (time.perf_counter() - t0) * 1000.0
        return res, rec

    def write_outputs(self, res: SegmentationResult, rec: ImageRecord, output_dir: str | Path, overwrite: bool = False, spacing_known: bool = True) -> Path:
        """Write ``mask.nii.gz`` (input grid and header), ``mask.png`` for PNG input, the overlay
        with the fitted ellipse and ``result.json`` (HC, ellipse, time) atomically."""
        names = list(OUTPUT_NAMES) + (["mask.png"] if rec.kind == "png" else [])
        check_outputs_free(output_dir, names, overwrite)
        unit = "mm" if spacing_known else "pixels"
        ell = res["ellipse"]
        meta = {
            "image": str(rec.path),
            "mask": "mask.nii.gz",
            "foreground_pixels": int((res["mask"] > 0).sum()),
            "label_voxels": {str(v): int((res["mask"] == v).sum()) for v in np.unique(res["mask"]) if v > 0},
            "head_circumference": None if math.isnan(res["hc"]) else round(float(res["hc"]), 3),
            "head_circumference_unit": unit,
            "ellipse_px": None if ell is None else dict(ell._asdict()),
            "time_ms": round(float(res["time_ms"]), 2),
        }
        from morphzoo.viz import overlay_mask

        with atomic_output_dir(output_dir) as tmp:
            write_nifti_like(res["mask"].astype(np.uint8), rec, tmp / "mask.nii.gz")
            if rec.kind == "png":
                if res["mask"].max() <= 1:  # binary: 0/255
                    write_png(res["mask"].astype(np.float32) * 255.0, tmp / "mask.png")
                else:  # label maps keep their values (0/1/2)
                    write_png(res["mask"], tmp / "mask.png", scale=False)
            title = "mask" if ell is None else f"HC {res['hc']:.1f} {unit}"
            overlay_mask(rec.array, res["mask"], tmp / "overlay.png", extra=None if ell is None else tuple(ell), title=title)
            (tmp / "result.json").write_text(json.dumps(meta, indent=2))
        logger.info("segmented %s in %.1f ms (HC %s %s); outputs in %s", rec.path, res["time_ms"], meta["head_circumference"], unit, output_dir)
        return Path(output_dir)


def _item_name(item: Mapping[str, Any], k: int) -> str:
    return Path(str(item["image"])).name.split(".")[0] or f"image_{k:03d}"


def calibrate_hc_offset(
    segmenter: Segmenter, items: Sequence[Mapping[str, Any]], root: str | Path | None = None, progress: bool = True
) -> float:
    """The ``hc_offset_px`` that makes a network's own masks reproduce the reference circumferences.

    :func:`morphzoo.data.hc18.hc18_contour_offset` calibrates the offset on reference masks, which
    corrects the read-out but not the network: a network whose masks reach beyond the annotation
    (a soft boundary upsampled from its input size) reads every head too large. This runs the
    segmenter on ``items`` (use validation images: never test images), thresholds its foreground
    probability as :meth:`Segmenter.segment` does and returns
    :func:`morphzoo.metrics.contour_offset` of those masks against the items' ``hc_mm`` with the
    segmenter's ``hc_fit`` (the median of the per-image offsets, so a few failed images do not
    move it).

    Args:
        segmenter: a two-class 2D :class:`Segmenter`.
        items: datalist items with ``image``, ``hc_mm`` and ``pixel_size_mm``.
        root: data root of relative paths (default :func:`morphzoo.paths.data_root`).
        progress: show a progress bar.

    Returns:
        The offset in pixels of the original images.

    Raises:
        ValueError: if an item lacks ``hc_mm`` or ``pixel_size_mm``, or a mask is empty.
    """
    from tqdm.auto import tqdm

    masks, refs, spacings = [], [], []
    for k, item in enumerate(tqdm(list(items), desc="calibrate", disable=not progress)):
        if item.get("hc_mm") is None or item.get("pixel_size_mm") is None:
            raise ValueError(f"{item.get('image', k)}: calibrate_hc_offset needs hc_mm and pixel_size_mm in every item.")
        px = float(item["pixel_size_mm"])
        res, _ = segmenter.segment(resolve_path(item["image"], root), spacing=(px, px))
        masks.append((res["prob"] >= 0.5).astype(np.uint8))
        refs.append(float(item["hc_mm"]))
        spacings.append((px, px))
    return contour_offset(masks, refs, spacings, method=segmenter.hc_fit)


def evaluate_segmentation(
    methods: Mapping[str, Segmenter],
    items: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    labels: Sequence[int] = (0, 1),
    num_images: int | None = None,
    num_figures: int = 2,
    progress: bool = True,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Segment every item with every method; metrics in each image's original grid.

    Relative paths of the items are under ``root`` (the configs' ``dataset_dir``; default
    :func:`morphzoo.paths.data_root`).

    Writes ``images.csv`` (one row per image and method), ``summary.json``/``summary.md`` (mean ±
    std, median ms, parameters) and overlays for the first ``num_figures`` images. Distances are
    in mm with the item's ``pixel_size_mm`` (HC18) or the image header; ``hc_abs_error_mm``
    compares the fitted ellipse's circumference with the item's ``hc_mm``. With more than one
    foreground label (e.g. ``hippocampus_fewlabel``: 1 anterior, 2 posterior) the scores are
    :func:`morphzoo.metrics.label_overlap_and_distance` of the label map over every voxel of the
    volume (every slice), see :func:`segmentation_metrics`.
    """
    from tqdm.auto import tqdm

    from morphzoo.inference.reports import summarize, summary_markdown, write_pairs_csv, write_text_atomic
    from morphzoo.viz import overlay_mask

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = list(items)[: num_images or None]
    foreground = [int(v) for v in labels if int(v) != 0]
    multilabel = len(foreground) > 1
    metrics = segmentation_metrics(labels)
    rows: list[dict[str, Any]] = []
    for k, item in enumerate(tqdm(items, desc="images", disable=not progress)):
        name = _item_name(item, k)
        px = item.get("pixel_size_mm")
        spacing = None if px is None else (float(px), float(px))
        try:
            ref = read_label(resolve_path(item["label"], root), spacing=spacing, what="label")
            ref_arr = clean_label(ref.array, labels, source=str(ref.path))
        except Exception as e:
            rows += [{"method": m, "image": name, "error": f"{type(e).__name__}: {e}"} for m in methods]
            continue
        for method, seg in methods.items():
            row: dict[str, Any] = {"method": method, "image": name}
            try:
                res, rec = seg.segment(resolve_path(item["image"], root), spacing=spacing)
                if multilabel:
                    row.update(label_overlap_and_distance(res["mask"], ref_arr, foreground, spacing=rec.spacing))
                else:
                    row.update(segmentation_scores(res["prob"], ref_arr, spacing=rec.spacing, mask=res["mask"]))
                row["time_ms"] = res["time_ms"]
                row["hc_mm"] = res["hc"]
                if item.get("hc_mm") is not None and px is not None:
                    row["hc_abs_error_mm"] = abs(res["hc"] - float(item["hc_mm"]))
                if k < num_figures:
                    ell = res["ellipse"]
                    hc = "" if multilabel else f", HC {res['hc']:.1f} mm"
                    overlay_mask(rec.array, res["mask"], out / "figures" / f"{name}_{method}.png",
                                 extra=None if ell is None else tuple(ell), title=f"{method}: Dice {row['dice']:.3f}{hc}")
            except Exception as e:
                logger.exception("%s failed on %s", method, name)
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    write_pairs_csv(rows, out / "images.csv")
    params = {m: s.num_parameters for m, s in methods.items()}
    summary = summarize(rows, metrics, parameters=params)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "summary.md", summary_markdown(summary, metrics, unit="image"))
    return summary


class SegmentationRunner:
    """What a segmentation bundle's ``inference.json`` runs.

    With ``image`` set (``--image PATH``) segments that image into ``output_dir``; otherwise every
    item of ``items``, or of split ``split`` of the ``datalist`` file (read only then), into
    ``output_dir/<image name>/``, relative paths under ``dataset_dir``. A user's bad input ends
    :meth:`run` with one line and exit status 2.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        output_dir: str,
        image: str | None = None,
        pixel_size_mm: float | None = None,
        overwrite: bool | str = False,
        items: Sequence[Mapping[str, Any]] | None = None,
        num_images: int | None = None,
        dataset_dir: str | Path | None = None,
        datalist: str | Path | None = None,
        split: str = "test",
    ) -> None:
        self.segmenter = segmenter
        self.dataset_dir = dataset_dir
        self.datalist, self.split = datalist, split
        self.output_dir = Path(output_dir)
        self.image = image or None
        self.pixel_size_mm = float(pixel_size_mm) if pixel_size_mm not in (None, "", 0) else None
        self.overwrite = cli_flag(overwrite, "overwrite")
        self.items = None if items is None else list(items)
        self.num_images = num_images

    def _one(self, path: str | Path, px: float | None, out: Path) -> dict[str, Any]:
        spacing = None if px is None else (px,) * (self.segmenter.spatial_dims or 2)  # px: PNG pixels
        if not Path(path).exists():
            raise InputError(f"{path}: image file does not exist.")
        res, rec = self.segmenter.segment(path, spacing=spacing)
        known = px is not None or rec.kind == "nifti"
        self.segmenter.write_outputs(res, rec, out, self.overwrite, spacing_known=known)
        return {"image": str(rec.path), "hc": res["hc"], "time_ms": res["time_ms"]}

    def run(self) -> list[dict[str, Any]]:
        """Segment (see the class); exits with status 2 and one line on a user's bad input."""
        from morphzoo.inference.runner import cli_errors

        with cli_errors():
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
        if self.image:
            return [self._one(self.image, self.pixel_size_mm, self.output_dir)]
        from morphzoo.inference.runner import datalist_pairs

        items = self.items
        if items is None:
            if self.datalist is None:
                raise InputError("give --image PATH, or a datalist to segment its test images.")
            items = datalist_pairs(self.datalist, self.split)
        root = self.dataset_dir
        results = []
        for k, item in enumerate(items[: self.num_images or None]):
            px = item.get("pixel_size_mm")
            results.append(self._one(resolve_path(item["image"], root), None if px is None else float(px), self.output_dir / _item_name(item, k)))
        return results
