#!/usr/bin/env python
"""Draw one metric of several training runs on one figure, chaining the stages of a stage-wise run.

Each curve is ``NAME=LOG[+LOG...]``: the ``training_log.jsonl`` files of consecutive runs (e.g. the
three stages of ``fetal_us_cascade_reg``) are chained into one curve whose iterations continue from
stage to stage (dotted lines mark the stage boundaries).

Usage::

    python tools/training_curves.py --out curve.png --key val_mean_dice \\
        "cascade, stage-wise=runs/a/stage1/training_log.jsonl+runs/a/stage2/training_log.jsonl" \\
        "single-scale FCN=runs/b/training_log.jsonl"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_curve(spec: str) -> tuple[str, list[Path]]:
    """``NAME=LOG[+LOG...]`` -> (name, logs); a missing log is an error naming it."""
    name, sep, logs = spec.partition("=")
    if not sep or not name or not logs:
        raise SystemExit(f"{spec!r}: expected NAME=LOG[+LOG...]")
    paths = [Path(p) for p in logs.split("+")]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"{p}: training log not found (curve {name!r})")
    return name, paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("curves", nargs="+", help="NAME=LOG[+LOG...]")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--key", default="val_mean_dice", help="metric to draw (default: val_mean_dice)")
    p.add_argument("--xkey", default="iteration", choices=("iteration", "epoch"))
    args = p.parse_args(argv)
    from morphzoo.viz import chain_training_logs, plot_metric_comparison

    curves = {}
    for spec in args.curves:
        name, paths = parse_curve(spec)
        curves[name] = chain_training_logs(paths)
    try:
        out = plot_metric_comparison(curves, args.out, key=args.key, xkey=args.xkey)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, rows in curves.items():
        vals = [float(r[args.key]) for r in rows if isinstance(r.get(args.key), (int, float))]
        if vals:
            print(f"{name}: {len(vals)} points, best {args.key} {max(vals):.4f}, last {vals[-1]:.4f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
