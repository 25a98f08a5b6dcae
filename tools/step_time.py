#!/usr/bin/env python
"""Time one training step of every bundle, by stage, with its training cuts on and off, in one run.

Each bundle's own ``configs/train.json`` (plus ``configs/task_<task>.json`` for a non-default task)
is parsed as ``python -m monai.bundle run`` would, on a small subset of its training data, and its
trainer runs ``--warmup`` + ``--steps`` iterations in a fresh process with
:class:`morphzoo.engines.StepTimer` attached (median ms per stage: data, forward, loss, backward,
optimiser). Every configuration runs twice:

- ``after``: the config as shipped (subjects/images cached in memory by MONAI ``CacheDataset``,
  freed tensor memory kept in the heap by :func:`morphzoo.engines.keep_heap`, channels-last
  memory format where the bundle's ``channels_last`` key is on);
- ``before``: the same with those cuts switched off (``cache_rate`` 0, ``keep_heap`` and
  ``channels_last`` false, ``precision`` fp32 where the bundle ships ``auto``/``bf16``);
- ``cache`` (with ``--variants``): the data cache on, the others off, to tell them apart;
- ``bf16`` (with ``--variants``): ``after`` plus bf16 autocast of the network's forward pass
  (``precision: bf16``, :func:`morphzoo.engines.resolve_autocast`; fp32 where the CPU has no native
  bf16, which the record's ``bf16_native`` says).

Besides the wall time of each stage, the table gives the step's process CPU time (``cpu``),
which other jobs sharing the machine change much less than the wall times.

Both at ``--threads`` torch threads (the bundles' training runs use one thread each, two runs at a
time on a 2-core machine). Absolute times depend on the machine and its load; the ratio within
one run is the measurement. Peak memory is the process's maximum resident set size.

Usage::

    python tools/step_time.py                                   # every bundle, its default task
    python tools/step_time.py --bundles voxelmorph,fmirnet --tasks all --steps 8
    python tools/step_time.py --out outputs/step_time           # also writes step_time.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "forward", "loss", "backward", "optimizer", "other", "total")
CACHE_KEYS = ("train#subjects#cache_rate", "train#dataset#cache_rate")
SUBSET_KEYS = {"max_train_subjects": 12, "max_train_images": 24}
VARIANTS = ("before", "cache", "after", "bf16")


def bundle_configs(bundle: Path, task: str | None) -> tuple[list[str], str]:
    """The train config files of ``bundle`` for ``task`` (None: its default) and the task name."""
    train = bundle / "configs" / "train.json"
    if not train.is_file():
        raise SystemExit(f"{train}: no training config.")
    default = json.loads(train.read_text()).get("task")
    if task in (None, default):
        return [str(train)], str(default)
    overlay = bundle / "configs" / f"task_{task}.json"
    if not overlay.is_file():
        raise SystemExit(f"{overlay}: bundle {bundle.name} has no task {task!r}.")
    return [str(train), str(overlay)], task


def bundle_tasks(bundle: Path) -> list[str]:
    """The default task of ``bundle`` and every task overlay it carries."""
    default = json.loads((bundle / "configs" / "train.json").read_text()).get("task")
    return [str(default)] + sorted(p.stem[len("task_") :] for p in (bundle / "configs").glob("task_*.json"))


def time_one(bundle: Path, task: str | None, variant: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Run ``warmup + steps`` training iterations of one configuration here; its timing record."""
    import torch
    from monai.bundle import ConfigParser

    from morphzoo.engines import StepTimer, bf16_supported

    files, task = bundle_configs(bundle, task)
    parser = ConfigParser()
    parser.read_config(files)
    tmp = tempfile.mkdtemp(prefix="step_time_")
    overrides: dict[str, Any] = {
        "bundle_root": str(bundle),
        "output_dir": tmp,
        "ckpt_dir": os.path.join(tmp, "models"),
        "epoch_length": warmup + steps,
        "max_epochs": 1,
        "val_interval": 10**6,
        "num_threads": threads,
    }
    for key, n in SUBSET_KEYS.items():
        if key in parser.config:
            overrides[key] = n
    cuts = []
    if variant in ("before", "cache"):
        for key in CACHE_KEYS if variant == "before" else ():
            try:
                node = parser[key.rsplit("#", 1)[0]]
            except KeyError:
                continue
            if isinstance(node, dict) and "cache_rate" in node:
                overrides[key] = 0.0
                cuts.append("cache")
        for key in ("keep_heap", "channels_last"):
            if key in parser.config and parser.get_parsed_content(key) is True:
                overrides[key] = False
                cuts.append(key)
        if str(parser.config.get("precision", "fp32")).lower() != "fp32":  # a bundle shipped with bf16 on
            overrides["precision"] = "fp32"
            cuts.append("bf16")
    elif variant == "bf16":
        if "precision" not in parser.config:
            raise SystemExit(f"{bundle.name}: its train config has no 'precision' key for the bf16 variant.")
        overrides["precision"] = "bf16"
        cuts.append("bf16")
    elif variant != "after":
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}.")
    for key, value in overrides.items():
        parser[key] = value
    parser.get_parsed_content("initialize")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    trainer = parser.get_parsed_content("train#trainer")
    build_s = time.perf_counter() - t0
    timer = StepTimer(warmup=warmup)
    timer.attach(trainer)
    trainer.run()
    rec = timer.summary()
    batch = int(parser.get_parsed_content("batch_size"))
    network = trainer.network
    rec.update(
        bundle=bundle.name,
        task=task,
        variant=variant,
        cuts=cuts,
        batch_size=batch,
        threads=threads,
        pairs_per_s=batch / (rec["total_ms"] / 1000.0),
        build_s=build_s,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        parameters=sum(p.numel() for p in network.parameters()),
        bf16_native=bf16_supported("cpu"),
    )
    return rec


def run_isolated(bundle: Path, task: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`time_one` in a fresh process (clean thread settings and peak memory)."""
    cmd = [sys.executable, __file__, "--one", json.dumps([str(bundle), task, variant]), "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"bundle": bundle.name, "task": task, "variant": variant, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per bundle, task and variant, stage medians, and the speed-up over the
    first variant of the row group (``before`` when it ran)."""
    head = "| bundle | task | batch | variant | data | forward | loss | backward | optimiser | step (ms) | CPU (ms) | pairs/s | peak RSS (MB) | speed-up |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault((r["bundle"], r["task"]), {})[r["variant"]] = r
    for (bundle, task), rows in by_key.items():
        first = next((rows[v] for v in VARIANTS if v in rows), {})
        for variant in VARIANTS:
            r = rows.get(variant)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {bundle} | {task} | | {variant} | failed: {r['error'][:80]} | | | | | | | | | |")
                continue
            if variant == "after":
                label = variant
            elif variant == "bf16":
                label = "bf16 (after + bf16 autocast" + ("" if r.get("bf16_native", True) else ", not native: fp32") + ")"
            else:
                label = variant + " (" + (", ".join(f"no {c.replace('_', '-')}" for c in r["cuts"]) or "as shipped") + ")"
            speed = ""
            if r is not first and first.get("total_ms"):
                speed = f"{first['total_ms'] / r['total_ms']:.2f}x"
            cells = " | ".join(f"{r[s + '_ms']:.0f}" for s in ("data", "forward", "loss", "backward", "optimizer"))
            lines.append(f"| {bundle} | {task} | {r['batch_size']} | {label} | {cells} | **{r['total_ms']:.0f}** | {r.get('cpu_ms', float('nan')):.0f} | {r['pairs_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {speed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--bundles", default=None, help="comma-separated bundle names (default: every bundle with a train.json)")
    p.add_argument("--bundles-dir", default=str(REPO / "bundles"))
    p.add_argument("--tasks", default="default", help="'default' (each bundle's default task), 'all' (its task overlays too) or task names, comma-separated")
    p.add_argument("--steps", type=int, default=5, help="timed iterations per configuration (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="iterations run first and not timed (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the bundles' training runs)")
    p.add_argument("--variants", default="before,after", help=f"comma-separated, of {', '.join(VARIANTS)} (default before,after)")
    p.add_argument("--repeats", type=int, default=1, help="run the variants this many times, interleaved; the table keeps each one's fastest (default 1)")
    p.add_argument("--out", default=None, help="folder for step_time.json and step_time.md")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        bundle, task, variant = json.loads(args.one)
        print(json.dumps(time_one(Path(bundle), task, variant, args.steps, args.warmup, args.threads)))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    if not variants or any(v not in VARIANTS for v in variants):
        p.error(f"--variants: choose from {', '.join(VARIANTS)}")
    root = Path(args.bundles_dir)
    names = args.bundles.split(",") if args.bundles else sorted(d.name for d in root.iterdir() if (d / "configs" / "train.json").is_file())
    records = []
    t0 = time.perf_counter()
    for name in names:
        bundle = root / name
        if not (bundle / "configs" / "train.json").is_file():
            raise SystemExit(f"{bundle}: not a bundle with configs/train.json.")
        if args.tasks == "all":
            tasks = bundle_tasks(bundle)
        elif args.tasks == "default":
            tasks = [bundle_configs(bundle, None)[1]]
        else:
            tasks = [t for t in bundle_tasks(bundle) if t in args.tasks.split(",")]
        for task in tasks:
            best: dict[str, dict[str, Any]] = {}
            for _ in range(max(1, args.repeats)):
                for variant in variants:
                    rec = run_isolated(bundle, task, variant, args)
                    msg = rec.get("error") or f"{rec['total_ms']:.0f} ms/step"
                    print(f"{name} {task} {variant}: {msg}", file=sys.stderr, flush=True)
                    if variant not in best or "error" in best[variant] or rec.get("total_ms", float("inf")) < best[variant].get("total_ms", float("inf")):
                        best[variant] = rec
            records += [best[v] for v in variants]
    md = table(records)
    info = f"{args.steps} timed steps after {args.warmup} warm-up, {args.threads} thread(s), best of {max(1, args.repeats)} interleaved run(s), wall {time.perf_counter() - t0:.0f} s"
    print(md + "\n\n" + info)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "step_time.json").write_text(json.dumps({"records": records, "info": info, "command": " ".join(sys.argv)}, indent=2))
        (out / "step_time.md").write_text(md + "\n\n" + info + "\n")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
