"""Multi-panel figures: registration results, segmentation overlays, training curves, boxplots.

Each writer (``registration_panel``, ``overlay_mask``, ``plot_training_curves``,
``boxplot_by_method``) builds a figure with the matching ``*_figure`` builder, saves it
atomically as PNG (:func:`morphzoo.viz.io.save_figure`) and releases it. The builders return
the :class:`~matplotlib.figure.Figure` for notebooks and tests.

3D inputs are shown as one slice: ``axis`` picks the array axis to slice along and ``index``
the slice (``None``: middle). Slices are displayed in array order (rows = first remaining
axis, origin top-left), without any reorientation, so they agree with the displacement
components drawn on them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from ._arrays import field_item, image_item, label_item, robust_range, slice_field, slice_image, to_numpy
from .grid import plot_deformation_grid
from .io import new_figure, save_figure
from .jacobian import add_colorbar, jacobian_determinant_field, plot_jacobian_map

PANEL_NAMES = ("moving", "fixed", "warped", "difference", "grid", "jacobian")
X_KEYS = ("iteration", "step", "epoch")
TIME_KEYS = ("time", "time_s", "timestamp", "wall_time", "elapsed", "elapsed_s")
_MAX_CLASSES = 12



def _draw_label_contours(ax: Axes, label2d: np.ndarray, color: Any, linestyle: str = "-", linewidth: float = 1.0) -> int:
    """Draw the boundary of every positive class of a 2D label map.

    Soft labels (floats in [0, 1] that are not all integral) are contoured at 0.5; other
    float labels are rounded. With more than 12 classes only the foreground (``> 0``) is drawn.

    Args:
        ax: target axes.
        label2d: ``(H, W)`` label map.
        color: contour colour.
        linestyle: contour line style.
        linewidth: contour width.

    Returns:
        Number of contour sets drawn.
    """
    lab = np.asarray(label2d)
    if lab.dtype == bool:
        masks = [lab]
    else:
        labf = lab.astype(np.float64, copy=False)
        finite = labf[np.isfinite(labf)]
        if finite.size and not np.all(finite == np.round(finite)) and finite.min() >= 0 and finite.max() <= 1:
            masks = [labf >= 0.5]
        else:
            labi = np.rint(np.nan_to_num(labf)).astype(np.int64)
            values = np.unique(labi[labi > 0])
            masks = [labi > 0] if len(values) > _MAX_CLASSES else [labi == v for v in values]
    drawn = 0
    for m in masks:
        if m.any() and not m.all() and min(m.shape) >= 2:
            ax.contour(m.astype(np.float64), levels=[0.5], colors=[color], linestyles=linestyle, linewidths=linewidth)
            drawn += 1
    return drawn


def _show_image(ax: Axes, img2d: np.ndarray, vmin: float, vmax: float, title: str, name: str) -> None:
    ax.imshow(img2d, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    _finish_image_axes(ax, title, name)


def _finish_image_axes(ax: Axes, title: str, name: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_label(name)
    ax.set_xticks([])
    ax.set_yticks([])


def _slice_note(ndim: int, shape: tuple[int, ...], axis: int, index: int | None) -> str:
    if ndim == 2:
        return ""
    ax_ = axis % 3
    idx = shape[ax_] // 2 if index is None else index % shape[ax_]
    return f"axis {ax_}, slice {idx}/{shape[ax_]}"


def registration_figure(
    moving: Any,
    fixed: Any,
    warped: Any,
    ddf: Any,
    title: str | None = None,
    moving_label: Any = None,
    fixed_label: Any = None,
    warped_label: Any = None,
    axis: int = 0,
    index: int | None = None,
    grid_step: int | None = None,
) -> Figure:
    """Build the registration panel (see :func:`registration_panel`).

    Args:
        moving: moving image ``(*S)``, ``(1, *S)`` or ``(B, 1, *S)``.
        fixed: fixed image, same layout.
        warped: moving image warped onto the fixed grid, same layout.
        ddf: ``(N, *S)`` or ``(B, N, *S)`` displacement in voxels.
        title: figure title.
        moving_label: optional label map of the moving image (``(*S)``, ``(1, *S)`` or one-hot).
        fixed_label: optional label map of the fixed image.
        warped_label: optional warped moving label map.
        axis: slicing axis for 3D.
        index: slice index for 3D (``None``: middle).
        grid_step: grid spacing in pixels (``None``: about 16 lines across the larger side).

    Returns:
        Figure with exactly six axes (``fig.axes``), labelled ``"moving", "fixed", "warped",
        "difference", "grid", "jacobian"``; the colorbars of the difference and Jacobian
        panels are inset axes of those panels (``ax.child_axes``).
    """
    field = field_item(ddf)
    nd = field.shape[0]
    spatial = field.shape[1:]
    imgs = {}
    for name, img in (("moving", moving), ("fixed", fixed), ("warped", warped)):
        a = image_item(img, nd).astype(np.float64, copy=False)
        if a.shape != spatial:
            raise ValueError(f"{name} has spatial shape {a.shape}, the ddf {spatial}")
        imgs[name] = slice_image(a, axis, index)
    labels = {}
    for name, lab in (("moving", moving_label), ("fixed", fixed_label), ("warped", warped_label)):
        if lab is not None:
            la = label_item(lab, nd)
            if la.shape != spatial:
                raise ValueError(f"{name}_label has spatial shape {la.shape}, the ddf {spatial}")
            labels[name] = slice_image(la, axis, index)
    u2d = slice_field(field, axis, index)
    jac_full = jacobian_determinant_field(field)
    jac2d = slice_image(jac_full, axis, index)
    fold_pct = 100.0 * float(np.mean(jac_full <= 0))

    h, w = u2d.shape[1:]
    panel_w = 3.0
    panel_h = float(np.clip(panel_w * h / max(w, 1), 1.5, 6.0))
    fig = new_figure((6 * panel_w + 0.8, panel_h + 0.9))
    axes = fig.subplots(1, 6)
    vmin, vmax = robust_range(imgs["moving"], imgs["fixed"], imgs["warped"])

    _show_image(axes[0], imgs["moving"], vmin, vmax, "moving", "moving")
    if "moving" in labels:
        _draw_label_contours(axes[0], labels["moving"], "r")
    _show_image(axes[1], imgs["fixed"], vmin, vmax, "fixed", "fixed")
    if "fixed" in labels:
        _draw_label_contours(axes[1], labels["fixed"], "lime")
    _show_image(axes[2], imgs["warped"], vmin, vmax, "warped", "warped")
    if "fixed" in labels:
        _draw_label_contours(axes[2], labels["fixed"], "lime", linestyle="--", linewidth=0.8)
    if "warped" in labels:
        _draw_label_contours(axes[2], labels["warped"], "r")

    diff = np.abs(imgs["warped"] - imgs["fixed"])
    dmax = robust_range(diff, q=0.5)[1]
    im = axes[3].imshow(diff, cmap="magma", vmin=0.0, vmax=dmax, interpolation="nearest")
    _finish_image_axes(axes[3], f"|warped - fixed| (mean {np.nanmean(diff):.3g})", "difference")
    add_colorbar(axes[3], im)

    axes[4].imshow(imgs["warped"], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    step = grid_step if grid_step is not None else max(1, max(h, w) // 16)
    plot_deformation_grid(axes[4], u2d, step=step, color="y", linewidth=0.6)
    _finish_image_axes(axes[4], f"grid on warped (step {step})", "grid")

    plot_jacobian_map(axes[5], jac2d, colorbar=True)
    _finish_image_axes(axes[5], f"det J (folding {fold_pct:.2f}%)", "jacobian")

    note = _slice_note(nd, spatial, axis, index)
    sup = " - ".join(s for s in (title, note) if s)
    if sup:
        fig.suptitle(sup, fontsize=11)
    return fig


def registration_panel(
    moving: Any,
    fixed: Any,
    warped: Any,
    ddf: Any,
    path: str | os.PathLike,
    title: str | None = None,
    moving_label: Any = None,
    fixed_label: Any = None,
    warped_label: Any = None,
    axis: int = 0,
    index: int | None = None,
) -> Path:
    """Write a one-row registration summary PNG.

    Panels: moving | fixed | warped | ``|warped - fixed|`` | deformation grid over warped |
    Jacobian determinant (folded voxels in black, whole-field folding percentage in the
    title). Label contours: moving label on *moving* (red), fixed label on *fixed* (green)
    and dashed on *warped*, warped label on *warped* (red). Intensities of the first three
    panels share one display range (1st-99th percentile).

    Args:
        moving: moving image ``(*S)``, ``(1, *S)`` or ``(B, 1, *S)``; tensor or array.
        fixed: fixed image, same layout.
        warped: warped moving image, same layout.
        ddf: ``(N, *S)`` or ``(B, N, *S)`` displacement in voxels (channel i along array axis
            i; ``warped(x) = moving(x + ddf(x))``).
        path: output PNG path (parents created, overwritten if present).
        title: figure title.
        moving_label: optional moving label map (``(*S)``, ``(1, *S)`` or one-hot ``(C, *S)``).
        fixed_label: optional fixed label map.
        warped_label: optional warped moving label map.
        axis: for 3D, the array axis to slice along.
        index: for 3D, the slice index (``None``: middle).

    Returns:
        The written path.
    """
    fig = registration_figure(
        moving, fixed, warped, ddf, title=title, moving_label=moving_label, fixed_label=fixed_label,
        warped_label=warped_label, axis=axis, index=index,
    )
    return save_figure(fig, path)


def _ellipses(extra: Any) -> list[tuple[float, ...]]:
    arr = np.asarray(to_numpy(extra), dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"extra must be (cx, cy, a, b, angle) or a list of them, got shape {arr.shape}")
    return [tuple(float(v) for v in row) for row in arr]


def overlay_figure(
    image: Any,
    mask: Any,
    contour_color: Any = "r",
    extra: Any = None,
    axis: int = 0,
    index: int | None = None,
    title: str | None = None,
    extra_color: Any = "c",
) -> Figure:
    """Build the segmentation overlay (see :func:`overlay_mask`).

    Returns:
        Figure with one axes labelled ``"overlay"``.
    """
    img = image_item(image).astype(np.float64, copy=False)
    nd = img.ndim
    msk = label_item(mask, nd)
    if msk.shape != img.shape:
        raise ValueError(f"mask has spatial shape {msk.shape}, the image {img.shape}")
    img2d = slice_image(img, axis, index)
    msk2d = slice_image(msk, axis, index)
    h, w = img2d.shape
    width = 6.0
    height = float(np.clip(width * h / max(w, 1), 2.0, 9.0))
    fig = new_figure((width, height + 0.4))
    ax = fig.add_subplot()
    vmin, vmax = robust_range(img2d, q=0.5)
    ax.imshow(img2d, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    _draw_label_contours(ax, msk2d, contour_color, linewidth=1.5)
    if extra is not None:
        for cx, cy, a, b, ang in _ellipses(extra):
            ax.add_patch(
                Ellipse((cx, cy), width=2 * a, height=2 * b, angle=math.degrees(ang), fill=False,
                        edgecolor=extra_color, linewidth=1.2, linestyle="--", zorder=4, gid="ellipse")
            )
    note = _slice_note(nd, img.shape, axis, index)
    _finish_image_axes(ax, " - ".join(s for s in (title, note) if s), "overlay")
    return fig


def overlay_mask(
    image: Any,
    mask: Any,
    path: str | os.PathLike,
    contour_color: Any = "r",
    extra: Any = None,
    *,
    axis: int = 0,
    index: int | None = None,
    title: str | None = None,
    extra_color: Any = "c",
) -> Path:
    """Write an image with the contour of a segmentation mask (and optional ellipses) as PNG.

    Args:
        image: ``(*S)`` or ``(1, *S)`` image, 2D or 3D; tensor or array.
        mask: mask / label map of the same spatial shape (``(*S)``, ``(1, *S)`` or one-hot);
            each positive class is outlined.
        path: output PNG path.
        contour_color: mask contour colour.
        extra: an ellipse ``(cx, cy, a, b, angle)`` or a list of them, in pixels of the shown
            slice: centre column ``cx`` and row ``cy``, semi-axes ``a`` (along the rotated
            x axis) and ``b``, ``angle`` in radians from the column axis towards the row axis
            (the ``skimage.measure.EllipseModel`` convention). Drawn dashed in ``extra_color``.
        axis: for 3D, the slicing axis.
        index: for 3D, the slice index (``None``: middle).
        title: axes title.
        extra_color: ellipse colour.

    Returns:
        The written path.
    """
    fig = overlay_figure(image, mask, contour_color=contour_color, extra=extra, axis=axis, index=index,
                         title=title, extra_color=extra_color)
    return save_figure(fig, path)


def _parse_value(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            return s
    return v


def _read_records(source: str | os.PathLike) -> list[dict[str, Any]]:
    """Read metric rows from a CSV file, a JSON-lines file or a JSON list."""
    p = Path(source)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".csv", ".tsv"):
        delim = "\t" if p.suffix.lower() == ".tsv" else ","
        return [{k: _parse_value(v) for k, v in row.items()} for row in csv.DictReader(text.splitlines(), delimiter=delim)]
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(stripped)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [dict(r) for r in rows]


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if hasattr(v, "item") and getattr(v, "size", 1) == 1:
        v = v.item()
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def training_curves_figure(records: Sequence[Mapping[str, Any]] | str | os.PathLike, keys: Sequence[str] | None = None) -> Figure:
    """Build the training-curve figure (see :func:`plot_training_curves`).

    Returns:
        Figure with one axes per metric, each labelled with the metric name.
    """
    rows = _read_records(records) if isinstance(records, (str, os.PathLike)) else [dict(r) for r in records]
    if keys is None:
        keys = []
        for r in rows:
            for k, v in r.items():
                if k not in X_KEYS and k not in TIME_KEYS and k not in keys and _as_float(v) is not None:
                    keys.append(k)
    else:
        keys = list(keys)
        missing = [k for k in keys if not any(_as_float(r.get(k)) is not None for r in rows)]
        if missing:
            raise ValueError(f"no numeric values for {missing} in the training records")
    if not keys:
        raise ValueError("no numeric metric found in the training records")

    n = len(keys)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure((4.0 * ncols, 3.0 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, key in zip(axes, keys):
        pts = [(r, _as_float(r.get(key))) for r in rows]
        pts = [(r, y) for r, y in pts if y is not None]
        xkey = next((xk for xk in X_KEYS if all(_as_float(r.get(xk)) is not None for r, _ in pts)), None)
        if xkey is None:
            xs = np.arange(len(pts), dtype=np.float64)
            xlabel = "record"
        else:
            xs = np.array([_as_float(r[xkey]) for r, _ in pts])
            xlabel = xkey
        ys = np.array([y for _, y in pts])
        order = np.argsort(xs, kind="stable")
        ax.plot(xs[order], ys[order], marker="o" if len(ys) <= 50 else None, markersize=3, linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_label(key)
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig


def plot_training_curves(
    records: Sequence[Mapping[str, Any]] | str | os.PathLike,
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
) -> Path:
    """Write training curves as PNG: one subplot per metric.

    Each metric is plotted against ``iteration`` when every row carrying it has one, else
    ``epoch``, else the row number; rows without the metric (e.g. validation metrics logged
    once per epoch) are skipped for that subplot.

    Args:
        records: rows such as ``{"epoch": 1, "iteration": 10, "loss": 0.3, "val_dice": 0.6}``,
            or the path of a CSV file, a JSON-lines file or a JSON list of such rows.
        path: output PNG path.
        keys: metrics to plot, in order; ``None``: every numeric key other than
            ``iteration``/``step``/``epoch`` and clock keys (``time``, ``time_s``,
            ``timestamp``, ``wall_time``, ``elapsed``, ``elapsed_s``), in order of first
            appearance.

    Returns:
        The written path.

    Raises:
        ValueError: if there is nothing to plot or a requested key has no numeric value.
    """
    return save_figure(training_curves_figure(records, keys=keys), path)


def chain_training_logs(sources: Sequence[Sequence[Mapping[str, Any]] | str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows of consecutive training runs (e.g. the stages of a stage-wise schedule) as one log.

    Each run's ``iteration`` values are offset by the last iteration of the runs before it, so the
    chained log reads as one curve; every row gets ``"stage"`` = its run's position (1-based). A run
    whose iterations start beyond the previous run's last one resumed it from a checkpoint (its
    iterations already continue the count) and takes the previous run's offset instead.

    Args:
        sources: per run, its rows or the path of its log (CSV, JSON lines or a JSON list).

    Returns:
        The chained rows.

    Raises:
        ValueError: if a run has no row with an ``iteration``.
    """
    out: list[dict[str, Any]] = []
    offset, prev_offset, prev_last = 0.0, 0.0, None
    for k, src in enumerate(sources, start=1):
        rows = _read_records(src) if isinstance(src, (str, os.PathLike)) else [dict(r) for r in src]
        its = [_as_float(r.get("iteration")) for r in rows]
        its = [i for i in its if i is not None]
        if not its:
            raise ValueError(f"run {k} ({src if isinstance(src, (str, os.PathLike)) else 'rows'}) has no 'iteration' values")
        if prev_last is not None and min(its) > prev_last:  # resumed: its count continues the previous run's
            offset = prev_offset
        prev_offset, prev_last = offset, max(its)
        for r in rows:
            row = dict(r, stage=k)
            if _as_float(r.get("iteration")) is not None:
                row["iteration"] = float(r["iteration"]) + offset
            out.append(row)
        offset += max(its)
    return out


def metric_comparison_figure(
    curves: Mapping[str, Sequence[Mapping[str, Any]] | str | os.PathLike], key: str = "val_mean_dice", xkey: str = "iteration"
) -> Figure:
    """Build the comparison figure (see :func:`plot_metric_comparison`).

    Returns:
        Figure with one axes labelled ``key`` and one line per curve, labelled with its name.
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for name, rows in curves.items():
        rows = _read_records(rows) if isinstance(rows, (str, os.PathLike)) else list(rows)
        pts = [(_as_float(r.get(xkey)), _as_float(r.get(key)), r.get("stage")) for r in rows]
        pts = sorted((x, y, st) for x, y, st in pts if x is not None and y is not None)
        if not pts:
            raise ValueError(f"curve {name!r} has no rows with both {xkey!r} and {key!r}")
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linewidth=1.2, label=name)
        for prev, cur in zip(pts, pts[1:]):  # stage boundaries of a chained log
            if prev[2] is not None and cur[2] != prev[2]:
                ax.axvline(0.5 * (prev[0] + cur[0]), color=line.get_color(), linestyle=":", linewidth=1.0)
    ax.set_xlabel(xkey)
    ax.set_ylabel(key)
    ax.set_label(key)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_metric_comparison(
    curves: Mapping[str, Sequence[Mapping[str, Any]] | str | os.PathLike],
    path: str | os.PathLike,
    key: str = "val_mean_dice",
    xkey: str = "iteration",
) -> Path:
    """Write one metric of several training runs against ``xkey`` on one axes (PNG), e.g. the
    validation Dice of a stage-wise cascade (:func:`chain_training_logs`; dotted lines mark its
    stage boundaries) against a single-scale network.

    Args:
        curves: name -> rows or log path.
        path: output PNG path.
        key: the metric.
        xkey: the x axis (``iteration`` or ``epoch``).

    Returns:
        The written path.

    Raises:
        ValueError: on no curves or a curve without the metric.
    """
    return save_figure(metric_comparison_figure(curves, key=key, xkey=xkey), path)


def boxplot_figure(values: Mapping[str, Sequence[float]], ylabel: str = "Dice", title: str | None = None) -> Figure:
    """Build the per-method boxplot (see :func:`boxplot_by_method`).

    Returns:
        Figure with one axes labelled ``"boxplot"``.
    """
    names = list(values)
    if not names:
        raise ValueError("values is empty")
    data = []
    for name in names:
        arr = np.asarray(to_numpy(values[name]), dtype=np.float64).ravel()
        data.append(arr[np.isfinite(arr)])
    fig = new_figure((max(4.0, 1.0 * len(names) + 1.5), 4.0))
    ax = fig.add_subplot()
    pos = np.arange(1, len(names) + 1)
    keep = [i for i, d in enumerate(data) if d.size]
    if keep:
        ax.boxplot([data[i] for i in keep], positions=pos[keep], widths=0.6, showmeans=True, showfliers=False,
                   medianprops={"color": "C1"}, meanprops={"marker": "^", "markerfacecolor": "C2", "markeredgecolor": "C2"})
    rng = np.random.default_rng(0)
    for i in keep:
        jitter = rng.uniform(-0.15, 0.15, size=data[i].size)
        ax.scatter(pos[i] + jitter, data[i], s=8, color="0.3", alpha=0.6, zorder=3, linewidths=0)
    long = max(len(n) for n in names) > 10 or len(names) > 6
    ax.set_xticks(pos, [f"{n}\n(n={d.size})" for n, d in zip(names, data)], rotation=30 if long else 0,
                  ha="right" if long else "center", fontsize=9)
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_label("boxplot")
    if title:
        ax.set_title(title)
    return fig


def boxplot_by_method(
    values: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    ylabel: str = "Dice",
    title: str | None = None,
) -> Path:
    """Write a boxplot of per-case scores per method as PNG.

    Boxes show median and quartiles, whiskers 1.5 IQR, a triangle the mean, and every case
    is drawn as a (deterministically jittered) dot; non-finite values are dropped, and the
    number of cases kept is shown under each method name.

    Args:
        values: method name -> per-case values (sequence, array or tensor), in display order.
        path: output PNG path.
        ylabel: y-axis label.
        title: optional title.

    Returns:
        The written path.
    """
    return save_figure(boxplot_figure(values, ylabel=ylabel, title=title), path)
