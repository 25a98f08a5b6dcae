#!/usr/bin/env python
"""Paired differences of one metric between methods, from the per-case CSVs the benchmark
(``pairs.csv``) and the segmentation evaluation (``images.csv``) write.

Cases are matched by their ``pair`` (registration) or ``image`` (segmentation) column, so methods
from two runs on the same cases can be compared (Dice does not depend on the run; times do, so
compare speed only within one run). A CSV given as ``TAG=PATH`` names its methods ``TAG:method``,
so one method's two runs (e.g. two weight files evaluated under the bundle's name) can be paired.
Prints, per reference, the mean difference, its standard error and the number of cases the method
wins: a higher value wins, except for the error, distance, folding and time columns
(``LOWER_IS_BETTER``), where a lower one does.

Usage::

    python tools/paired_diff.py outputs/bench/run/pairs.csv --method fmirnet --against ants_syn
    python tools/paired_diff.py a/pairs.csv b/pairs.csv --method fmirnet --against convexadam voxelmorph
    python tools/paired_diff.py new=outputs/a/images.csv old=outputs/b/images.csv \
        --method new:fetal_us_seg --against old:fetal_us_seg --key hc_abs_error_mm
    python tools/paired_diff.py images.csv --method fetal_us_seg --against plain_unet --key hc_abs_error_mm --correlation
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

# metric columns where a lower value is better (prefixes); every other column: higher is better
LOWER_IS_BETTER = ("hc_abs_error", "hd", "assd", "rmse", "mse", "folding", "jacobian_std", "sdlogj", "time")


def lower_is_better(key: str) -> bool:
    """Whether a lower value of metric column ``key`` is the better one (errors, distances, folding, times)."""
    return key.startswith(LOWER_IS_BETTER)


def parse_csv_arg(arg: str) -> tuple[str, Path]:
    """``[TAG=]PATH`` -> (tag, path); ``tag`` is ``""`` without one."""
    tag, sep, path = arg.partition("=")
    return (tag, Path(path)) if sep and tag and "/" not in tag else ("", Path(arg))


def load_cases(paths: list[Path | str], key: str) -> dict[str, dict[str, float]]:
    """method -> case -> value of ``key`` over every CSV (a later file's rows for a method win);
    a ``TAG=PATH`` entry names its methods ``TAG:method``."""
    out: dict[str, dict[str, float]] = {}
    for arg in paths:
        tag, path = parse_csv_arg(str(arg))
        if not path.is_file():
            raise SystemExit(f"{path}: per-case CSV not found.")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                case = row.get("pair") or row.get("image")
                value = row.get(key)
                if case is None or value in (None, ""):
                    continue
                method = f"{tag}:{row['method']}" if tag else row["method"]
                out.setdefault(method, {})[case] = float(value)
    return out


def paired(a: dict[str, float], b: dict[str, float], lower_better: bool = False) -> tuple[float, float, int, int]:
    """(mean of a - b, standard error, cases a wins, cases) over the cases both have; ``a`` wins a
    case with a higher value, or a lower one with ``lower_better``."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise SystemExit(f"only {len(common)} case(s) in common: nothing to pair.")
    d = [a[c] - b[c] for c in common]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, sd / math.sqrt(len(d)), sum((x < 0) if lower_better else (x > 0) for x in d), len(d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="+", help="pairs.csv / images.csv files, each optionally TAG=PATH (methods become TAG:method)")
    p.add_argument("--method", required=True)
    p.add_argument("--against", nargs="+", required=True, help="reference methods")
    p.add_argument("--key", default="dice")
    p.add_argument("--correlation", action="store_true",
                   help="also print the Pearson and Spearman correlation of the two methods' per-case values")
    args = p.parse_args(argv)
    cases = load_cases(args.csv, args.key)
    for name in [args.method, *args.against]:
        if name not in cases:
            raise SystemExit(f"method {name!r} not in {[str(c) for c in args.csv]} (methods: {sorted(cases)}).")
    lower = lower_is_better(args.key)
    rule = "lower" if lower else "higher"
    for ref in args.against:
        mean, se, won, n = paired(cases[args.method], cases[ref], lower)
        print(f"{args.method} vs {ref}: {args.key} {mean:+.3f} ± {se:.3f} (standard error), {won}/{n} cases won ({rule} is better)")
        if args.correlation:
            from scipy.stats import pearsonr, spearmanr

            common = sorted(set(cases[args.method]) & set(cases[ref]))
            a, b = [cases[args.method][c] for c in common], [cases[ref][c] for c in common]
            print(f"  per-case {args.key}: Pearson r = {pearsonr(a, b)[0]:.2f}, Spearman = {spearmanr(a, b)[0]:.2f} over {n} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
