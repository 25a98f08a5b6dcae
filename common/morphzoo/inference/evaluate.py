"""Evaluate registration methods on datalist pairs: per-pair CSV, summary (JSON + Markdown), figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from morphzoo.inference.registrar import Registrar, RegistrationResult
from morphzoo.inference.reports import SUMMARY_METRICS, pair_name, summarize, summary_markdown, write_pairs_csv, write_text_atomic
from morphzoo.transforms.subjects import read_pair_item

__all__ = ["evaluate_pairs", "identity_registrar", "load_pair_item"]

logger = logging.getLogger(__name__)

#: the datalist pair reader (:func:`morphzoo.transforms.subjects.read_pair_item`) under its old name
load_pair_item = read_pair_item


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
    reference_method: str | Sequence[str] | None = None,
    root: str | Path | None = None,
    on_result: Callable[[str, Mapping[str, Any], int, RegistrationResult], None] | None = None,
) -> dict[str, Any]:
    """Run every method on the same pairs and write ``pairs.csv``, ``summary.json``,
    ``summary.md``, ``dice_boxplot.png`` and a registration panel per method for the first
    ``num_figures`` pairs. A method failing on a pair is recorded with its error; the run goes on.

    Args:
        metrics: the metrics summarised in ``summary.json``/``summary.md``.
        reference_method: method(s) of ``methods`` to compare speed against (see :func:`summarize`).
        root: data root of the items' relative paths (the configs' ``dataset_dir``; default
            :func:`morphzoo.paths.data_root`).
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
        name = pair_name(item, k)
        try:
            mov, fix, mlab, flab = read_pair_item(item, labels, root=root)
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
    summary = summarize(rows, metrics, reference=reference_method, parameters=params)  # a reference not run adds no column
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "summary.md", summary_markdown(summary, metrics))
    from morphzoo.viz import boxplot_by_method  # matplotlib is a dependency: an import error is a real bug

    dice = {m: [float(r["dice"]) for r in rows if r["method"] == m and "dice" in r] for m in methods}
    if any(dice.values()):
        boxplot_by_method(dice, out / "dice_boxplot.png", ylabel="Dice")
    return summary


def _num_parameters(reg: Registrar) -> int | None:
    n = getattr(reg, "num_parameters", None)
    if n is None and getattr(reg, "network", None) is not None:
        n = sum(p.numel() for p in reg.network.parameters())
    return None if n is None else int(n)


def _panel(path: Path, mov, fix, res: RegistrationResult, mlab, flab, reg: Registrar) -> None:
    from morphzoo.transforms.spatial import resample_to_reference
    from morphzoo.viz import registration_panel
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


