"""Evaluate a registration method on datalist pairs: per-pair CSV, summary (JSON + Markdown), figures."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from morphzoo.data.labels import clean_label
from morphzoo.inference.registrar import Registrar, RegistrationResult
from morphzoo.paths import data_root
from morphzoo.transforms.io import ImageRecord, read_image, read_label

__all__ = [
    "load_pair_item",
    "evaluate_pairs",
    "summarize",
    "summary_markdown",
    "identity_registrar",
    "RegistrationRunner",
    "SUMMARY_METRICS",
]

logger = logging.getLogger(__name__)

SUMMARY_METRICS = ("dice", "hd95", "assd", "folding_percent", "folding_count", "jacobian_std", "sdlogj", "ncc", "ssim", "nmi", "time_ms")


def _abs(path: str | None, root: Path) -> Path | None:
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


def _slice_record(rec: ImageRecord, axis: int, index: int) -> ImageRecord:
    arr = np.take(rec.array, index, axis=axis)
    sp = [s for i, s in enumerate(rec.spacing) if i != axis]
    keep = [i for i in range(rec.array.ndim) if i != axis]
    aff = np.eye(4)
    aff[:2, :2] = rec.affine[np.ix_(keep, keep)]
    return ImageRecord(arr, aff, tuple(sp), rec.path, rec.kind, None)


def load_pair_item(item: Mapping[str, Any], labels: Sequence[int] | None = None, root: str | Path | None = None, label_policy: str = "map"):
    """Read a datalist pair item into ``(moving, fixed, moving_label, fixed_label)`` records.

    Handles paths relative to the data root, ``slice_axis``/``slice_index`` (2D slices of
    volumes) and ``moving_pixel_size_mm``/``fixed_pixel_size_mm`` (PNG spacing). Labels with values
    outside ``labels`` are mapped to background with a warning (``label_policy="map"``, the known
    hippocampus ``-2`` defect) or rejected (``"error"``).
    """
    root = Path(root) if root is not None else data_root()
    recs: list[ImageRecord | None] = []
    for role in ("moving", "fixed"):
        ps = item.get(f"{role}_pixel_size_mm")
        sp = None if ps is None else (float(ps), float(ps))
        img = read_image(_abs(item[role], root), spacing=sp, what=f"{role} image")
        lab = None
        lp = _abs(item.get(f"{role}_label"), root)
        if lp is not None:
            lab = read_label(lp, spacing=sp, what=f"{role} label")
            if labels is not None:
                if label_policy == "error":
                    read_label(lp, allowed=labels, spacing=sp, what=f"{role} label")  # raises with details
                lab.array = clean_label(lab.array, list(labels), source=str(lp)).astype(np.int16)
        if "slice_axis" in item:
            ax, ix = int(item["slice_axis"]), int(item["slice_index"])
            img = _slice_record(img, ax, ix)
            lab = _slice_record(lab, ax, ix) if lab is not None else None
        recs += [img, lab]
    return recs[0], recs[2], recs[1], recs[3]


def identity_registrar(spatial_dims: int, labels: Sequence[int] | None = None, device: str | torch.device | None = None) -> Registrar:
    """A :class:`Registrar` returning a zero field: the unregistered baseline."""
    return Registrar(
        None,
        spatial_dims=spatial_dims,
        labels=labels,
        device=device,
        size_multiple=1,
        field_fn=lambda m, f: torch.zeros((m.shape[0], m.ndim - 2, *m.shape[2:]), dtype=m.dtype, device=m.device),
    )


def _pair_name(item: Mapping[str, Any], k: int) -> str:
    a = item.get("moving_subject") or Path(str(item["moving"])).name.split(".")[0]
    b = item.get("fixed_subject") or Path(str(item["fixed"])).name.split(".")[0]
    return f"{k:03d}_{a}_to_{b}"


def summarize(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = SUMMARY_METRICS,
    reference: str | None = None,
    parameters: Mapping[str, int | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per method: mean/std of each metric over successful pairs, median time, pair and failure counts.

    Args:
        rows: per-pair rows (``method``, ``pair``, metrics, optional ``error``).
        metrics: the metrics to summarise.
        reference: a method measured in the same run (e.g. ``"ants_syn"``); each method gets
            ``speedup = {"reference", "median", "pairs"}``: the median over pairs where both
            succeeded of ``time_ms(reference) / time_ms(method)`` (> 1: faster than the reference).
        parameters: method -> number of trainable parameters, stored as ``parameters``.
    """
    out: dict[str, dict[str, Any]] = {}
    ref_time: dict[str, float] = {}
    if reference is not None:
        ref_time = {
            r["pair"]: float(r["time_ms"]) for r in rows if r["method"] == reference and not r.get("error") and r.get("time_ms") not in (None, "")
        }
    for method in dict.fromkeys(r["method"] for r in rows):
        mrows = [r for r in rows if r["method"] == method]
        ok = [r for r in mrows if not r.get("error")]
        s: dict[str, Any] = {"pairs": len(ok), "failed": len(mrows) - len(ok)}
        if parameters is not None and parameters.get(method) is not None:
            s["parameters"] = int(parameters[method])
        for m in metrics:
            vals = np.array([float(r[m]) for r in ok if m in r and r[m] not in (None, "") and math.isfinite(float(r[m]))])
            if len(vals):
                s[m] = {"mean": float(vals.mean()), "std": float(vals.std()), "median": float(np.median(vals))}
        if ref_time:
            ratios = [
                ref_time[r["pair"]] / float(r["time_ms"])
                for r in ok
                if r["pair"] in ref_time and r.get("time_ms") not in (None, "") and float(r["time_ms"]) > 0
            ]
            if ratios:
                s["speedup"] = {"reference": reference, "median": float(np.median(ratios)), "pairs": len(ratios)}
        out[method] = s
    return out


def summary_markdown(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] = SUMMARY_METRICS, unit: str = "pair") -> str:
    """A Markdown table: one row per method, mean ± std per metric (time: median ms), and the
    parameter count and speed-up against the run's reference method when the summary has them.
    ``unit`` names what a row counts (``"pair"`` for registration, ``"image"`` for segmentation)."""
    cols = [m for m in metrics if any(m in s for s in summary.values())]
    with_params = any("parameters" in s for s in summary.values())
    refs = [s["speedup"]["reference"] for s in summary.values() if "speedup" in s]
    head = f"| method | {unit}s | " + " | ".join(f"ms/{unit} (median)" if c == "time_ms" else c for c in cols)
    if refs:
        head += f" | speed-up vs {refs[0]} (median)"
    if with_params:
        head += " | parameters"
    head += " |"
    lines = [head, "|" + "---|" * (len(cols) + 2 + bool(refs) + with_params)]
    for method, s in summary.items():
        cells = []
        for c in cols:
            v = s.get(c)
            if v is None:
                cells.append("")
            elif c == "time_ms":
                cells.append(f"{v['median']:.1f}")
            elif c == "folding_count":
                cells.append(f"{v['mean']:.1f}")
            else:
                cells.append(f"{v['mean']:.3f} ± {v['std']:.3f}")
        if refs:
            sp = s.get("speedup")
            cells.append(f"{sp['median']:.3g}×" if sp else "")
        if with_params:
            n = s.get("parameters")
            cells.append(f"{n:,}" if n is not None else "")
        pairs = f"{s['pairs']}" + (f" ({s['failed']} failed)" if s.get("failed") else "")
        lines.append(f"| {method} | {pairs} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_pairs_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def evaluate_pairs(
    methods: Mapping[str, Registrar],
    items: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    labels: Sequence[int] | None = None,
    num_pairs: int | None = None,
    num_figures: int = 2,
    distances: bool = True,
    progress: bool = True,
    metrics: Sequence[str] = SUMMARY_METRICS,
    reference_method: str | None = None,
    on_result: Callable[[str, Mapping[str, Any], int, RegistrationResult], None] | None = None,
) -> dict[str, Any]:
    """Run every method on the same pairs and write ``pairs.csv``, ``summary.json``,
    ``summary.md``, ``dice_boxplot.png`` and a registration panel per method for the first
    ``num_figures`` pairs. A method failing on a pair is recorded with its error; the run goes on.

    Args:
        metrics: the metrics summarised in ``summary.json``/``summary.md``.
        reference_method: a method of ``methods`` to compare speed against (see :func:`summarize`).
        on_result: called as ``on_result(method, item, k, result)`` after each successful
            registration (e.g. to export the field); an exception there counts as the method's failure.

    The summary also carries each method's parameter count: the Registrar's ``num_parameters``
    attribute if set (bundles, baselines), else the parameters of its network.

    Returns:
        the summary dict (also written as JSON).
    """
    from tqdm.auto import tqdm

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = list(items)[: num_pairs or None]
    rows: list[dict[str, Any]] = []
    for k, item in enumerate(tqdm(items, desc="pairs", disable=not progress)):
        name = _pair_name(item, k)
        try:
            mov, fix, mlab, flab = load_pair_item(item, labels)
        except Exception as e:  # a broken pair is recorded for every method
            rows += [{"method": m, "pair": name, "error": f"{type(e).__name__}: {e}"} for m in methods]
            continue
        for method, reg in methods.items():
            row: dict[str, Any] = {"method": method, "pair": name, "moving": item["moving"], "fixed": item["fixed"]}
            try:
                res: RegistrationResult = reg.register_records(mov, fix, mlab, flab, distances=distances)
                row.update(res.metrics)
                if on_result is not None:
                    on_result(method, item, k, res)
                if k < num_figures:
                    _panel(out / "figures" / f"{name}_{method}.png", mov, fix, res, mlab, flab, reg)
            except Exception as e:
                logger.exception("%s failed on %s", method, name)
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    write_pairs_csv(rows, out / "pairs.csv")
    params = {m: _num_parameters(reg) for m, reg in methods.items()}
    summary = summarize(rows, metrics, reference=reference_method if reference_method in methods else None, parameters=params)
    _atomic_text(out / "summary.json", json.dumps(summary, indent=2))
    _atomic_text(out / "summary.md", summary_markdown(summary, metrics))
    try:
        from morphzoo.viz import boxplot_by_method

        dice = {m: [float(r["dice"]) for r in rows if r["method"] == m and "dice" in r] for m in methods}
        if any(dice.values()):
            boxplot_by_method(dice, out / "dice_boxplot.png", ylabel="Dice")
    except ImportError:
        pass
    return summary


def _num_parameters(reg: Registrar) -> int | None:
    n = getattr(reg, "num_parameters", None)
    if n is None and getattr(reg, "network", None) is not None:
        n = sum(p.numel() for p in reg.network.parameters())
    return None if n is None else int(n)


def _panel(path: Path, mov, fix, res: RegistrationResult, mlab, flab, reg: Registrar) -> None:
    try:
        from morphzoo.viz import registration_panel
        from morphzoo.transforms.spatial import resample_to_reference
    except ImportError:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    def norm(a):
        a = np.asarray(a, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)

    mov_on_fix = resample_to_reference(mov, fix)
    lo, hi = float(mov_on_fix.min()), float(mov_on_fix.max())
    registration_panel(
        norm(mov_on_fix),
        norm(fix.array),
        (res.warped - lo) / (hi - lo) if hi > lo else res.warped * 0,
        res.ddf,
        path,
        title=path.stem,
        moving_label=resample_to_reference(mlab, fix, label=True) if mlab is not None else None,
        fixed_label=flab.array if flab is not None else None,
        warped_label=res.warped_label,
    )


class RegistrationRunner:
    """What a registration bundle's ``inference.json`` runs.

    With ``moving`` and ``fixed`` set (command line ``--moving PATH --fixed PATH``), registers that
    pair into ``output_dir``; otherwise registers every pair of ``items`` (the test split) into
    ``output_dir/<pair>/``.
    """

    def __init__(
        self,
        registrar: Registrar,
        output_dir: str,
        moving: str | None = None,
        fixed: str | None = None,
        moving_label: str | None = None,
        fixed_label: str | None = None,
        overwrite: bool | str = False,
        items: Sequence[Mapping[str, Any]] | None = None,
        num_pairs: int | None = None,
    ) -> None:
        self.registrar = registrar
        self.output_dir = Path(output_dir)
        self.moving, self.fixed = moving or None, fixed or None
        self.moving_label, self.fixed_label = moving_label or None, fixed_label or None
        self.overwrite = overwrite in (True, "true", "True", "1", 1)
        self.items = list(items or [])
        self.num_pairs = num_pairs

    def run(self) -> list[dict[str, float]]:
        if bool(self.moving) != bool(self.fixed):
            from morphzoo.transforms.io import InputError

            raise InputError("give both --moving and --fixed (or neither, to register the test split).")
        if self.moving:
            return [
                self.registrar.register_files(
                    self.moving, self.fixed, self.output_dir, self.moving_label, self.fixed_label, overwrite=self.overwrite
                )
            ]
        results = []
        for k, item in enumerate(self.items[: self.num_pairs or None]):
            mov, fix, mlab, flab = load_pair_item(item, self.registrar.labels)
            res = self.registrar.register_records(mov, fix, mlab, flab)
            self.registrar.write_outputs(res, mov, fix, mlab, flab, self.output_dir / _pair_name(item, k), self.overwrite)
            results.append(res.metrics)
        return results
