"""Overlap and surface-distance metrics of label maps, thin wrappers over :mod:`monai.metrics`.

Inputs are single label maps (no batch or channel axis) of shape ``(H, W[, D])`` as
``torch.Tensor`` or ``numpy.ndarray``; outputs are plain Python floats, ready for a CSV row.
Distances are in physical units (mm) when ``spacing`` (one value per array axis) is given,
in voxels otherwise. Surfaces are the inner boundary voxels of each mask as in
:func:`monai.metrics.utils.get_mask_edges` (no sub-voxel surfaces).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

__all__ = ["label_overlap_and_distance", "segmentation_scores", "hd95_learn2reg"]


def _as_pair(
    pred: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, spacing: Sequence[float] | None
) -> tuple[torch.Tensor, torch.Tensor, list[float] | None]:
    """Validate two maps of identical shape ``(H, W[, D])`` and a matching spacing."""
    pred_t, ref_t = _to_tensor(pred), _to_tensor(ref)
    if pred_t.shape != ref_t.shape:
        raise ValueError(f"pred and ref must have the same shape, got {tuple(pred_t.shape)} and {tuple(ref_t.shape)}.")
    if pred_t.ndim not in (2, 3):
        raise ValueError(f"pred and ref must be 2D or 3D maps (H, W[, D]), got shape {tuple(pred_t.shape)}.")
    spacing_list = None
    if spacing is not None:
        spacing_list = [float(s) for s in spacing]
        if len(spacing_list) != pred_t.ndim:
            raise ValueError(
                f"spacing must have one value per axis of shape {tuple(pred_t.shape)}, got {tuple(spacing_list)}."
            )
    return pred_t, ref_t, spacing_list


def _to_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """CPU tensor view of a map; unsigned integers wider than 8 bits become int64."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    arr = np.asarray(x)
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
        arr = arr.astype(np.int64)
    return torch.as_tensor(arr)


def _finite_or_nan(x: torch.Tensor) -> list[float]:
    """Flatten to floats, mapping inf (empty surfaces in MONAI) to NaN."""
    return [v if math.isfinite(v) else float("nan") for v in x.reshape(-1).double().tolist()]


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


def _distances(
    pred_oh: torch.Tensor, ref_oh: torch.Tensor, spacing: list[float] | None, with_hd: bool = True
) -> tuple[list[float], list[float], list[float]]:
    """HD, HD95 and symmetric ASSD per channel of one-hot maps ``(1, L, *S)``; NaN where a mask is empty.

    With ``with_hd=False`` the (full) Hausdorff distance is skipped and returned as NaN.
    """
    with warnings.catch_warnings():
        # MONAI warns on empty masks; absent labels are an expected case here and give NaN.
        warnings.filterwarnings("ignore", message=r"the (ground truth|prediction) of class")
        # raised by MONAI's own internal call to get_mask_edges (monai 1.5-1.6), nothing we pass
        warnings.filterwarnings("ignore", message=r".*always_return_as_numpy", category=FutureWarning)
        if with_hd:
            hd = compute_hausdorff_distance(pred_oh, ref_oh, include_background=True, spacing=spacing)
        else:
            hd = torch.full(pred_oh.shape[:2], float("nan"))
        hd95 = compute_hausdorff_distance(pred_oh, ref_oh, include_background=True, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(
            pred_oh, ref_oh, include_background=True, symmetric=True, spacing=spacing
        )
    return _finite_or_nan(hd), _finite_or_nan(hd95), _finite_or_nan(assd)


def label_overlap_and_distance(
    pred: torch.Tensor | np.ndarray,
    ref: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
    distances: bool = True,
) -> dict[str, float]:
    """Dice, Hausdorff distance, HD95 and ASSD per label, and their means over labels.

    Each label ``l`` is one-hot encoded (``pred == l``, ``ref == l``) and passed to
    :func:`monai.metrics.compute_dice` (``ignore_empty=False``),
    :func:`monai.metrics.compute_hausdorff_distance` (``percentile=None`` and ``95``) and
    :func:`monai.metrics.compute_average_surface_distance` (``symmetric=True``), with ``spacing``.

    Absent labels: Dice is 0 when the label is in exactly one of the maps and 1 when it is in
    neither; the distances are NaN when the label is missing from either map. The means
    ``dice`` (plain mean, never NaN) and ``hd``/``hd95``/``assd`` (mean over the labels whose
    distance is defined; NaN if none is) are over ``labels``.

    Args:
        pred: predicted (e.g. warped) integer label map of shape ``(H, W[, D])``.
        ref: reference (e.g. fixed) label map of the same shape.
        labels: label values to evaluate (background is usually left out).
        spacing: physical size of a voxel along each array axis (mm); None means 1.
        distances: when False only the Dice keys are computed (surface distances are slow).

    Returns:
        Dict of floats with keys ``dice_<l>`` (and ``hd_<l>``, ``hd95_<l>``, ``assd_<l>``) per label
        and ``dice`` (and ``hd``, ``hd95``, ``assd``).

    Raises:
        ValueError: when the shapes differ or are not 2D/3D, ``labels`` is empty, or ``spacing``
            does not have one value per axis.
    """
    pred_t, ref_t, spacing_list = _as_pair(pred, ref, spacing)
    labels = [int(label) for label in labels]
    if not labels:
        raise ValueError("labels must name at least one label value.")
    values = torch.as_tensor(labels).reshape(1, -1, *([1] * pred_t.ndim))
    pred_oh = (pred_t.unsqueeze(0).unsqueeze(0) == values).float()  # (1, L, *S)
    ref_oh = (ref_t.unsqueeze(0).unsqueeze(0) == values).float()
    dice = _finite_or_nan(compute_dice(pred_oh, ref_oh, include_background=True, ignore_empty=False))
    out: dict[str, float] = {f"dice_{label}": d for label, d in zip(labels, dice)}
    out["dice"] = float(sum(dice) / len(dice))
    if distances:
        hd, hd95, assd = _distances(pred_oh, ref_oh, spacing_list)
        for name, vals in (("hd", hd), ("hd95", hd95), ("assd", assd)):
            out.update({f"{name}_{label}": v for label, v in zip(labels, vals)})
            out[name] = _nanmean(vals)
    return out


def segmentation_scores(
    prob_or_mask: torch.Tensor | np.ndarray,
    ref: torch.Tensor | np.ndarray,
    spacing: Sequence[float] | None = None,
    threshold: float = 0.5,
    mask: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Scores of a binary segmentation against a binary reference mask.

    The prediction mask is ``prob_or_mask >= threshold`` (as :class:`monai.transforms.AsDiscrete`);
    the reference foreground is ``ref > 0``. Dice uses :func:`monai.metrics.compute_dice` and IoU
    :func:`monai.metrics.compute_iou` (both ``ignore_empty=False``: 1 when both masks are empty);
    precision and recall come from :func:`monai.metrics.get_confusion_matrix` and
    :func:`monai.metrics.compute_confusion_matrix_metric` (NaN when undefined, e.g. precision of an
    empty prediction). ``rmse`` is the root mean square difference between ``prob_or_mask`` (as
    float, not thresholded) and the binary reference. ``hd95`` and ``assd`` (symmetric) are in mm
    with ``spacing``, NaN when either mask is empty.

    Args:
        prob_or_mask: foreground probability map or binary mask of shape ``(H, W[, D])``.
        ref: binary reference mask of the same shape.
        spacing: physical size of a voxel along each array axis (mm); None means 1.
        threshold: probability at or above which a voxel is foreground.
        mask: the prediction mask, when it is not ``prob_or_mask >= threshold`` (e.g. a shape
            prior drawn from it): overlap and distances use it, ``rmse`` the probabilities.

    Returns:
        Dict of floats with keys ``dice``, ``iou``, ``precision``, ``recall``, ``rmse``, ``hd95``, ``assd``.

    Raises:
        ValueError: when the shapes differ or are not 2D/3D, or ``spacing`` has the wrong length.
    """
    prob_t, ref_t, spacing_list = _as_pair(prob_or_mask, ref, spacing)
    prob_t = prob_t.double()
    ref_bin = (ref_t > 0).double()
    if mask is not None:
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if tuple(mask_t.shape) != tuple(prob_t.shape):
            raise ValueError(f"mask of shape {tuple(mask_t.shape)} does not match the probabilities {tuple(prob_t.shape)}.")
        pred_oh = (mask_t.to(prob_t.device) > 0).double()[None, None]
    else:
        pred_oh = (prob_t >= threshold).double()[None, None]
    ref_oh = ref_bin[None, None]
    dice = compute_dice(pred_oh, ref_oh, include_background=True, ignore_empty=False)
    iou = compute_iou(pred_oh, ref_oh, include_background=True, ignore_empty=False)
    confusion = get_confusion_matrix(pred_oh, ref_oh, include_background=True)
    precision = compute_confusion_matrix_metric("precision", confusion)
    recall = compute_confusion_matrix_metric("recall", confusion)
    _, hd95, assd = _distances(pred_oh, ref_oh, spacing_list, with_hd=False)
    return {
        "dice": _finite_or_nan(dice)[0],
        "iou": _finite_or_nan(iou)[0],
        "precision": _finite_or_nan(precision)[0],
        "recall": _finite_or_nan(recall)[0],
        "rmse": float(torch.sqrt(torch.mean((prob_t - ref_bin) ** 2))),
        "hd95": hd95[0],
        "assd": assd[0],
    }


def hd95_learn2reg(
    pred: torch.Tensor | np.ndarray,
    ref: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
) -> float:
    """HD95 as Learn2Reg's evaluation code computes it (MDL-UzL/L2R, ``evaluation/utils.py``):
    per label, DeepMind's ``surface_distance.compute_robust_hausdorff(compute_surface_distances(
    ref == l, pred == l, spacing), 95)``, which weights each surface element by its area (ours,
    :func:`label_overlap_and_distance`, counts boundary voxels), then the NaN-ignoring mean over
    labels (a label absent from either map is NaN).

    Needs the PyPI package ``surface-distance`` (in the ``baselines`` extra); ``ImportError`` otherwise.
    """
    import surface_distance  # noqa: PLC0415

    pred_t, ref_t, spacing_list = _as_pair(pred, ref, spacing)
    p, r = pred_t.cpu().numpy(), ref_t.cpu().numpy()
    sp = spacing_list or [1.0] * p.ndim
    values = []
    for label in labels:
        rm, pm = r == int(label), p == int(label)
        if not rm.any() or not pm.any():
            values.append(math.nan)
            continue
        d = surface_distance.compute_surface_distances(rm, pm, sp)
        values.append(float(surface_distance.compute_robust_hausdorff(d, 95.0)))
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
