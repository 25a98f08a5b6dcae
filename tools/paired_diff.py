#!/usr/bin/env python
"""Paired differences of one metric between methods, from the per-case CSVs the benchmark
(``pairs.csv``) and the segmentation evaluation (``images.csv``) write.

Cases are matched by their ``pair`` (registration) or ``image`` (segmentation) column, so methods
from two runs on the same cases can be compared (Dice does not depend on the run; times do, so
compare speed only within one run). Prints, per reference, the mean difference, its standard error
and the number of cases the method wins.

Usage::

    python tools/paired_diff.py outputs/bench/run/pairs.csv --method fmirnet --against ants_syn
    python tools/paired_diff.py a/pairs.csv b/pairs.csv --method fmirnet --against convexadam voxelmorph
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def load_cases(paths: list[Path], key: str) -> dict[str, dict[str, float]]:
    """method -> case -> value of ``key`` over every CSV (a later file's rows for a method win)."""
    out: dict[str, dict[str, float]] = {}
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: per-case CSV not found.")
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                case = row.get("pair") or row.get("image")
                value = row.get(key)
                if case is None or value in (None, ""):
                    continue
                out.setdefault(row["method"], {})[case] = float(value)
    return out


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int, int]:
    """(mean of a - b, standard error, cases a wins, cases) over the cases both have."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise SystemExit(f"only {len(common)} case(s) in common: nothing to pair.")
    d = [a[c] - b[c] for c in common]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))
    return mean, sd / math.sqrt(len(d)), sum(x > 0 for x in d), len(d)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="+", type=Path, help="pairs.csv / images.csv files")
    p.add_argument("--method", required=True)
    p.add_argument("--against", nargs="+", required=True, help="reference methods")
    p.add_argument("--key", default="dice")
    args = p.parse_args(argv)
    cases = load_cases(args.csv, args.key)
    for name in [args.method, *args.against]:
        if name not in cases:
            raise SystemExit(f"method {name!r} not in {[str(c) for c in args.csv]} (methods: {sorted(cases)}).")
    for ref in args.against:
        mean, se, won, n = paired(cases[args.method], cases[ref])
        print(f"{args.method} vs {ref}: {args.key} {mean:+.3f} ± {se:.3f} (standard error), {won}/{n} cases won")
    return 0


if __name__ == "__main__":
    sys.exit(main())
