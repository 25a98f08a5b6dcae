#!/usr/bin/env python
"""Compare registration bundles and classical baselines on the same test pairs, in one run.

Every method goes through the same :class:`~morphzoo.inference.Registrar` code (resampling onto
the fixed grid, warping, metrics) on the first N pairs of a pair set (``--pair-set``: the 100 fixed test
pairs, every test subject onto the atlas, or the validation pairs used to choose defaults) of
``datalists/<task>.json``; speed is compared as ratios against ANTs SyN and SyNRA measured in the same run.

Examples::

    python tools/benchmark.py --task hippocampus3d --pairs 10 --methods identity,ants_syn,elastix_bspline
    python tools/benchmark.py --task hc18_reg2d                       # every available method, 100 pairs
    python tools/benchmark.py --task hippocampus3d --learn2reg-export --readme
    python tools/benchmark.py --task hippocampus2d --pair-set atlas_test_pairs --methods identity,ants_affine

Methods (``--methods``, comma-separated; default: identity, ants_syn, elastix_bspline and every
bundle with weights for the task; the registry is :mod:`morphzoo.inference.methods`):
    identity                 no registration (the floor)
    ants_syn                 ANTs SyN (antspyx; affine + SyN)                } need
    ants_synra               ANTs SyNRA (rigid + affine + SyN)               } ``pip install
    ants_affine              ANTs affine only                                } -e .[baselines]``
    elastix_bspline          elastix B-spline (itk-elastix)                  }
    elastix_affine_bspline   elastix affine, then B-spline                   }
    convexadam               ConvexAdam, default settings (3D only)          }
    <bundle>                 a registration bundle under --bundles (its default pipeline for the task)
    <bundle>[k=v;k2=v2]      the same with config overrides, e.g. searchmorph[prealign=none],
                             voxelmorph[refine_steps=0] (the stage ablations);
                             <bundle>[config=variant_x.json] adds a bundle overlay
    NAME=module:attr         any importable ``field_fn(moving, fixed) -> ddf`` (or a Registrar)

The table reports each pipeline stage's median time (prealign / network / refine ms) beside the
total, and, where the ``surface-distance`` package is installed, Learn2Reg's own HD95 (``hd95_l2r``)
and SDlogJ (``sdlogj_l2r``) beside ours.

Outputs in ``--out`` (default ``outputs/benchmark/<task>``, git-ignored): ``pairs.csv`` (one row per method and
pair, with the error of a failed registration), ``summary.json``, ``summary.md``, ``run.json``
(command, date, device, threads, wall time), ``dice_boxplot.png``, ``figures/`` (panels of the
first ``--figures`` pairs) and, with ``--learn2reg-export``, ``learn2reg/<method>/disp_FFFF_0000_MMMM_0000.npz``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
STAGE_TIMES = ("time_prealign_ms", "time_network_ms", "time_refine_ms")

PAIR_SETS = ("test", "atlas_test_pairs", "validation_pairs", "validation_subject_pairs")
PAIR_SET_NAMES = {"test": "test", "atlas_test_pairs": "atlas test", "validation_pairs": "validation", "validation_subject_pairs": "validation-subject"}
REFERENCES = ("ants_syn", "ants_synra")  # speed-up columns, for those of them in the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    from morphzoo.inference.methods import TASKS

    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--methods", default=None, help="comma-separated method names (default: every available one)")
    p.add_argument("--pairs", type=int, default=None, help="first N of the pair set's pairs (default: all)")
    p.add_argument(
        "--pair-set",
        default="test",
        choices=PAIR_SETS,
        help="datalist pairs: 'test' (100 fixed inter-subject pairs, default), 'atlas_test_pairs' (every test subject -> atlas) "
        "'validation_pairs' (the 20 validation pairs: choose a bundle's default pipeline there, never on test pairs) "
        "or 'validation_subject_pairs' (every ordered pair of validation subjects in a fixed order, "
        "morphzoo.data.validation_subject_pairs: more validation pairs, e.g. --pairs 100, where 20 are too few to decide)",
    )
    p.add_argument("--bundles", default=str(REPO / "bundles"), help="folder of the registration bundles (default: this checkout's bundles/)")
    p.add_argument("--device", default=None, help="torch device for networks, warping and metrics (default: cuda if available)")
    p.add_argument("--out", default=None, help="output folder (default: outputs/benchmark/<task>)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, ANTs and elastix (default: all cores)")
    p.add_argument("--figures", type=int, default=2, help="registration panels for the first N pairs (default 2)")
    p.add_argument("--no-distances", action="store_true", help="skip HD/HD95/ASSD (faster)")
    p.add_argument("--learn2reg-export", action="store_true", help="write displacement fields as Learn2Reg npz files")
    p.add_argument(
        "--readme",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="rewrite this task's results block in README.md (or PATH) between <!-- results:<task>:start/end --> markers",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="register nothing: rebuild summary.json/summary.md (and with --readme the README block) from the "
        "pairs.csv and run.json of an earlier run in --out, e.g. after a change of table columns",
    )
    args = p.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        p.error("--pairs must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- Learn2Reg export
def learn2reg_name(item: Mapping[str, Any]) -> str:
    """See :func:`morphzoo.inference.learn2reg.learn2reg_name` (imported on use: the tool starts fast)."""
    from morphzoo.inference.learn2reg import learn2reg_name as name

    return name(item)


def learn2reg_array(ddf) -> "Any":
    """See :func:`morphzoo.inference.learn2reg.learn2reg_array`."""
    from morphzoo.inference.learn2reg import learn2reg_array as array

    return array(ddf)


def make_exporter(out: Path):
    import numpy as np

    def export(method: str, item: Mapping[str, Any], k: int, res) -> None:
        d = out / "learn2reg" / method
        d.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(d / learn2reg_name(item), learn2reg_array(res.ddf))

    return export


# ---------------------------------------------------------------------------- README block
def readme_block(task: str, table: str, command: str, info: Mapping[str, Any]) -> str:
    return (
        f"<!-- results:{task}:start -->\n"
        f"Generated on {info['date']} by `{command}`: {info['pairs']} {PAIR_SET_NAMES.get(info.get('pair_set', 'test'), 'test')} pairs, device {info['device']}, "
        f"{info['threads']} CPU threads, wall time {info['wall_s']:.0f} s. Speed-ups are medians of per-pair time "
        f"ratios against the reference measured in the same run; absolute times depend on the machine. "
        f"`hd95_l2r`/`sdlogj_l2r` are Learn2Reg's definitions (area-weighted surfaces; std(log(J + 3)) "
        f"on the field cropped by 2 voxels), `hd95`/`sdlogj` ours (see README, Results).\n\n"
        f"{table.rstrip()}\n"
        f"<!-- results:{task}:end -->"
    )


def update_readme(path: Path, task: str, block: str) -> None:
    """Replace the block between this task's markers, or append a section holding it."""
    start, end = f"<!-- results:{task}:start -->", f"<!-- results:{task}:end -->"
    text = path.read_text() if path.exists() else "# MorphZoo\n"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## Benchmark: {task}\n\n{block}\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- main
def resummarize(args: argparse.Namespace) -> int:
    """``--summary-only``: the tables of an earlier run, from its ``pairs.csv`` and ``run.json``."""
    import csv

    from morphzoo.inference import summarize, summary_markdown
    from morphzoo.inference.methods import TASKS
    from morphzoo.inference.reports import write_text_atomic

    out = Path(args.out) if args.out else REPO / "outputs" / "benchmark" / args.task
    for name in ("pairs.csv", "run.json", "summary.json"):
        if not (out / name).is_file():
            raise SystemExit(f"benchmark: {out / name} not found; --summary-only rebuilds the tables of an earlier run in --out.")
    info = json.loads((out / "run.json").read_text())
    if info["task"] != args.task:
        raise SystemExit(f"benchmark: {out} holds a {info['task']} run, not {args.task}.")
    rows = list(csv.DictReader(open(out / "pairs.csv", newline="")))
    old = json.loads((out / "summary.json").read_text())
    params = {m: s.get("parameters") for m, s in old.items()}
    metrics = tuple(TASKS[args.task]["metrics"]) + STAGE_TIMES
    summary = summarize(rows, metrics, reference=[r for r in REFERENCES if r in info["methods"]], parameters=params)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    table = summary_markdown(summary, metrics)
    write_text_atomic(out / "summary.md", table)
    if args.readme is not None:
        readme = Path(args.readme) if args.readme else REPO / "README.md"
        update_readme(readme, args.task, readme_block(args.task, table, info["command"], info))
        print(f"benchmark: results written into {readme}", file=sys.stderr)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summary_only:
        return resummarize(args)
    t_start = time.perf_counter()
    threads = args.threads or _cores()
    # ITK (ANTs, elastix) reads this when its thread pool is first made: set it before importing them
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)

    import torch

    torch.set_num_threads(threads)
    from morphzoo.inference import evaluate_pairs
    from morphzoo.inference.methods import TASKS, build_methods

    dl_path = REPO / "datalists" / f"{args.task}.json"
    if not dl_path.is_file():
        raise SystemExit(f"benchmark: {dl_path} not found; build it with `python tools/prepare_data.py --tasks {args.task}`.")
    datalist = json.loads(dl_path.read_text())
    source = "validation_pairs" if args.pair_set == "validation_subject_pairs" else args.pair_set
    if source not in datalist:
        raise SystemExit(f"benchmark: {dl_path} has no '{source}' pairs; rebuild it with `python tools/prepare_data.py --tasks {args.task}`.")
    if args.pair_set == "validation_subject_pairs":
        from morphzoo.data import validation_subject_pairs

        items = validation_subject_pairs(datalist)[: args.pairs or None]
    else:
        items = datalist[args.pair_set][: args.pairs or None]
    spatial_dims = int(datalist.get("spatial_dims", len(TASKS[args.task]["spatial_size"])))
    labels = sorted(int(k) for k in datalist["labels"])
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    names = [s.strip() for s in args.methods.split(",") if s.strip()] if args.methods else None
    methods, skipped = build_methods(names, args.task, spatial_dims, labels, device, threads, bundles_dir=args.bundles)
    for name, why in skipped.items():
        print(f"benchmark: skipping {name}: {why}", file=sys.stderr)
    if not methods:
        raise SystemExit("benchmark: no method to run.")
    out = Path(args.out) if args.out else REPO / "outputs" / "benchmark" / args.task
    out.mkdir(parents=True, exist_ok=True)
    print(f"benchmark: {args.task}, {len(items)} {args.pair_set} pairs, methods {', '.join(methods)}, device {device}, {threads} threads -> {out}", file=sys.stderr)

    metrics = tuple(TASKS[args.task]["metrics"]) + STAGE_TIMES  # stage columns appear where a method has stages
    summary = evaluate_pairs(
        methods,
        items,
        out,
        labels=labels,
        num_figures=args.figures,
        distances=not args.no_distances,
        progress=not args.no_progress,
        metrics=metrics,
        reference_method=list(REFERENCES),
        on_result=make_exporter(out) if args.learn2reg_export else None,
    )
    from morphzoo.inference import summary_markdown

    table = summary_markdown(summary, metrics)
    wall = time.perf_counter() - t_start
    command = "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    info = {
        "task": args.task,
        "command": command,
        "date": _dt.datetime.now().strftime("%Y-%m-%d"),
        "pairs": len(items),
        "pair_set": args.pair_set,
        "methods": list(methods),
        "skipped": skipped,
        "device": str(device),
        "threads": threads,
        "reference": [r for r in REFERENCES if r in methods],
        "wall_s": wall,
        "torch": torch.__version__,
    }
    (out / "run.json").write_text(json.dumps(info, indent=2))
    if args.readme is not None:
        readme = Path(args.readme) if args.readme else REPO / "README.md"
        update_readme(readme, args.task, readme_block(args.task, table, command, info))
        print(f"benchmark: results written into {readme}", file=sys.stderr)
    failed = {m: s["failed"] for m, s in summary.items() if s.get("failed")}
    print(table)
    if failed:
        print("failed pairs (see pairs.csv, column 'error'): " + ", ".join(f"{m}: {n}" for m, n in failed.items()))
    print(f"wall time: {wall:.1f} s ({len(items)} pairs x {len(methods)} methods); outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
