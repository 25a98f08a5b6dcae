"""Reports of an evaluation: per-pair CSV, the per-method summary (JSON, Markdown) and their writers."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["SUMMARY_METRICS", "summarize", "summary_markdown", "write_pairs_csv", "write_text_atomic", "pair_name"]

SUMMARY_METRICS = ("dice", "hd95", "assd", "folding_percent", "folding_count", "jacobian_std", "sdlogj", "ncc", "ssim", "nmi", "time_ms")


def pair_name(item: Mapping[str, Any], k: int) -> str:
    """``kkk_<moving>_to_<fixed>``: the folder / row name of the k-th pair."""
    a = item.get("moving_subject") or Path(str(item["moving"])).name.split(".")[0]
    b = item.get("fixed_subject") or Path(str(item["fixed"])).name.split(".")[0]
    return f"{k:03d}_{a}_to_{b}"


def summarize(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = SUMMARY_METRICS,
    reference: str | Sequence[str] | None = None,
    parameters: Mapping[str, int | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per method: mean/std of each metric over successful pairs, median time, pair and failure counts.

    Args:
        rows: per-pair rows (``method``, ``pair``, metrics, optional ``error``).
        metrics: the metrics to summarise.
        reference: a method measured in the same run (e.g. ``"ants_syn"``), or several; each method
            gets ``speedup = {"reference", "median", "pairs"}`` for the first: the median over pairs
            where both succeeded of ``time_ms(reference) / time_ms(method)`` (> 1: faster than the
            reference), and ``speedups`` (reference -> the same dict) for all of them.
        parameters: method -> number of trainable parameters, stored as ``parameters``.
    """
    out: dict[str, dict[str, Any]] = {}
    refs = [reference] if isinstance(reference, str) else list(reference or [])
    ref_times = {
        ref: {r["pair"]: float(r["time_ms"]) for r in rows if r["method"] == ref and not r.get("error") and r.get("time_ms") not in (None, "")}
        for ref in refs
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
        for ref, ref_time in ref_times.items():
            ratios = [
                ref_time[r["pair"]] / float(r["time_ms"])
                for r in ok
                if r["pair"] in ref_time and r.get("time_ms") not in (None, "") and float(r["time_ms"]) > 0
            ]
            if ratios:
                s.setdefault("speedups", {})[ref] = {"reference": ref, "median": float(np.median(ratios)), "pairs": len(ratios)}
        if s.get("speedups"):
            s["speedup"] = next(iter(s["speedups"].values()))
        out[method] = s
    return out


def summary_markdown(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] = SUMMARY_METRICS, unit: str = "pair") -> str:
    """A Markdown table: one row per method, mean ± std per metric (time: median ms), and the
    parameter count and speed-up against the run's reference method when the summary has them.
    ``unit`` names what a row counts (``"pair"`` for registration, ``"image"`` for segmentation)."""
    cols = [m for m in metrics if any(m in s for s in summary.values())]
    with_params = any("parameters" in s for s in summary.values())
    refs: list[str] = []
    for s in summary.values():
        for ref in s.get("speedups", {s["speedup"]["reference"]: None} if "speedup" in s else {}):
            if ref not in refs:
                refs.append(ref)
    def title(c: str) -> str:
        if c == "time_ms":
            return f"ms/{unit} (median)"
        if c.startswith("time_") and c.endswith("_ms"):
            return f"{c[5:-3]} ms (median)"  # a pipeline stage: prealign / network / refine
        return c

    head = f"| method | {unit}s | " + " | ".join(title(c) for c in cols)
    for ref in refs:
        head += f" | speed-up vs {ref} (median)"
    if with_params:
        head += " | parameters"
    head += " |"
    lines = [head, "|" + "---|" * (len(cols) + 2 + len(refs) + with_params)]
    for method, s in summary.items():
        cells = []
        for c in cols:
            v = s.get(c)
            if v is None:
                cells.append("")
            elif c.startswith("time_"):
                cells.append(f"{v['median']:.1f}")
            elif c == "folding_count":
                cells.append(f"{v['mean']:.1f}")
            else:
                cells.append(f"{v['mean']:.3f} ± {v['std']:.3f}")
        for ref in refs:
            sp = s.get("speedups", {}).get(ref) or (s.get("speedup") if s.get("speedup", {}).get("reference") == ref else None)
            cells.append(f"{sp['median']:.3g}×" if sp else "")
        if with_params:
            n = s.get("parameters")
            cells.append(f"{n:,}" if n is not None else "")
        pairs = f"{s['pairs']}" + (f" ({s['failed']} failed)" if s.get("failed") else "")
        lines.append(f"| {method} | {pairs} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_pairs_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One CSV row per (method, pair) with the union of the rows' keys, written atomically."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
