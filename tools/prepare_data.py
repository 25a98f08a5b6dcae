#!/usr/bin/env python
"""Build the benchmark datalists (``datalists/<task>.json``) from the data root, optionally downloading the data.

Examples::

    python tools/prepare_data.py                         # all four tasks from $MORPHZOO_DATA
    python tools/prepare_data.py --tasks hc18_seg --check-labels
    python tools/prepare_data.py --download --root ~/morphzoo_data   # fetch MSD hippocampus + HC18 first
    python tools/prepare_data.py --verify                # exit 1 if a committed datalist is stale

Datalist paths are relative to the data root; bundles resolve them against ``$MORPHZOO_DATA``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from morphzoo.data import (
    TASKS,
    build_datalist,
    download_hc18,
    download_msd_hippocampus,
    save_datalist,
    scan_hippocampus_labels,
)
from morphzoo.paths import DATA_ENV, data_root

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("prepare_data")

_DATASET = {"hippocampus3d": "hippocampus", "hippocampus2d": "hippocampus", "hc18_reg2d": "hc18", "hc18_seg": "hc18", "hippocampus_fewlabel": "hippocampus"}
_DOWNLOAD = {"hippocampus": download_msd_hippocampus, "hc18": download_hc18}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root", type=Path, default=None, help=f"data root (default: ${DATA_ENV} or ../shared/data: {data_root()})"
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        choices=TASKS,
        metavar="TASK",
        help=f"tasks to build (default: all of {', '.join(TASKS)})",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "datalists",
        help="output folder (default: the repository's datalists/)",
    )
    p.add_argument(
        "--download", action="store_true", help="download the public data sets missing under --root (needs internet)"
    )
    p.add_argument(
        "--check-labels", action="store_true", help="scan the hippocampus label files and report unexpected values"
    )
    p.add_argument(
        "--verify", action="store_true", help="write nothing; exit 1 if a datalist in --out differs from a fresh build"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = (args.root or data_root()).expanduser().resolve()
    datasets = sorted({_DATASET[t] for t in args.tasks} | ({"hippocampus"} if args.check_labels else set()))

    for name in datasets:
        if (root / name).exists():
            continue
        if not args.download:
            print(
                f"error: {root / name} does not exist. Set {DATA_ENV} or --root to the data root, "
                "or add --download to fetch the public data set (needs internet).",
                file=sys.stderr,
            )
            return 2
        print(f"downloading {name} into {root} ...")
        _DOWNLOAD[name](root)

    status = 0
    if "hippocampus" in datasets:
        report = scan_hippocampus_labels(root / "hippocampus")
        print(
            f"label check of {root / 'hippocampus'}: {len(report)} file(s) with unexpected values "
            "(the loaders map them to 0)"
        )
        if args.check_labels:
            for path, counts in report.items():
                found = ", ".join(f"value {v}: {c} voxel(s)" for v, c in counts.items())
                print(f"  {path}: {found}")

    for task in args.tasks:
        datalist = build_datalist(task, root)
        target = args.out / f"{task}.json"
        counts = " ".join(f"{k}={len(v)}" for k, v in datalist.items() if isinstance(v, list))
        if args.verify:
            current = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else None
            ok = current == datalist
            status |= 0 if ok else 1
            print(f"{task}: {'up to date' if ok else 'STALE or missing'} ({target}; {counts})")
            continue
        save_datalist(datalist, target)
        print(f"{task}: wrote {target} ({counts})")
    return status


if __name__ == "__main__":
    sys.exit(main())
