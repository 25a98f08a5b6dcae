#!/usr/bin/env python
"""Peak memory and time of SearchMorph's two correlation paths: all-pairs volume vs local search.

Issue #6: "Measure peak memory and time of both paths at 160x192 and 320x384". For every case
(input size, path) this builds the correlation pyramid once and does one search lookup
(:class:`~morphzoo.networks.blocks.CorrelationSearch`, forward only, no grad) on random features
at half resolution (``D = 4`` channels, L1 radius ``r = 3``, 4 levels, batch 1, a random field),
the paper's setting. Cases:

- 2D input 160x192 (features 80x96) and 320x384 (features 160x192), paths ``all_pairs`` and
  ``local``; for 160x192 the max abs difference of the two search maps is computed in the same
  process (float32);
- 3D input 64^3 (features 32^3), ``local`` only; the all-pairs row only reports the volume it
  would need, ``(32^3)^2 * 4`` bytes = 4.29 GB, and is "not run" unless ``--all_pairs_3d`` is given
  (and the volume is within ``--max_gb`` and the memory available).

Every case runs in a fresh subprocess. Peak memory on CPU = the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` when the kernel allows it, otherwise the
lifetime peak of the fresh process) minus its resident set just before the pyramid is built, on
the first (cold) pyramid + lookup; with ``--cuda``, ``torch.cuda.max_memory_allocated`` minus the
memory allocated before it. Times are medians of ``--repeats`` runs after that first one.
Expected all-pairs peak: the level-0 volume plus its pooled levels (4/3 volume in 2D) plus the
lookup's small buffers. An all-pairs case whose volume exceeds ``--max_gb``, or whose estimated
peak (``PEAK_FACTOR`` = 1.6 volumes, with margin) exceeds the available memory, is reported as
"not run" with the reason instead of being attempted.

Usage::

    nice -n 5 python tools/bench_correlation.py --out outputs/bench_correlation.json
    python tools/bench_correlation.py --cuda --threads 4 --repeats 10 --max_gb 20 --all_pairs_3d

Prints a Markdown table and writes the rows as JSON (``--out``, written atomically).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

FEATURE_CHANNELS = 4
RADIUS = 3
LEVELS = 4
# (label, input size) -> features at half resolution
CASES_2D = [(160, 192), (320, 384)]
CASE_3D = (64, 64, 64)
PEAK_FACTOR = 1.6  # estimated all-pairs peak / volume (volume + pooled levels 4/3, + margin)


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kb() -> Optional[int]:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def _mem_available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def all_pairs_bytes(feature_size: List[int], batch: int = 1) -> int:
    """Bytes of the float32 level-0 all-pairs volume: ``B * (prod S)^2 * 4``."""
    n = 1
    for s in feature_size:
        n *= int(s)
    return batch * n * n * 4


# --------------------------------------------------------------------------- one case (child process)


def run_case(input_size: List[int], mode: str, repeats: int, threads: int, cuda: bool, compare: bool) -> Dict[str, Any]:
    """Measure one (size, path) case in this process; returns a JSON-able row."""
    import torch

    from morphzoo.networks.blocks.correlation import CorrelationSearch

    torch.set_num_threads(threads)
    device = torch.device("cuda" if cuda else "cpu")
    dims = len(input_size)
    feat = [s // 2 for s in input_size]
    gen = torch.Generator().manual_seed(0)
    h_fixed = torch.randn(1, FEATURE_CHANNELS, *feat, generator=gen).to(device)
    h_moving = torch.randn(1, FEATURE_CHANNELS, *feat, generator=gen).to(device)
    ddf = (2.0 * torch.randn(1, dims, *feat, generator=gen)).to(device)
    search = CorrelationSearch(dims, RADIUS, LEVELS, mode).to(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # load kernels / thread pools on a tiny problem first, so the cold run below measures this size
    with torch.no_grad():
        tiny = [8] * dims
        t_f = torch.randn(1, FEATURE_CHANNELS, *tiny, device=device)
        search.lookup(search.pyramid(t_f, t_f), t_f, torch.zeros(1, dims, *tiny, device=device))
        del t_f
    sync()

    # cold run: peak memory
    hwm_reset = False
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        hwm_reset = _reset_hwm()
        base = (_status_kb("VmRSS") or 0) * 1024
    with torch.no_grad():
        pyr = search.pyramid(h_fixed, h_moving)
        smap = search.lookup(pyr, h_fixed, ddf)
    sync()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        peak_method = "torch.cuda.max_memory_allocated - allocated before"
    else:
        peak = (_peak_rss_kb() or 0) * 1024 - base
        peak_method = "VmHWM (reset) - VmRSS before" if hwm_reset else "lifetime VmHWM of a fresh process - VmRSS before"
    pyramid_bytes = sum(int(t.numel()) * t.element_size() for t in pyr)
    del pyr

    # timings
    t_pyr: List[float] = []
    t_look: List[float] = []
    with torch.no_grad():
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            pyr = search.pyramid(h_fixed, h_moving)
            sync()
            t1 = time.perf_counter()
            smap = search.lookup(pyr, h_fixed, ddf)
            sync()
            t2 = time.perf_counter()
            del pyr
            t_pyr.append(t1 - t0)
            t_look.append(t2 - t1)
    total = [a + b for a, b in zip(t_pyr, t_look)]
    row: Dict[str, Any] = {
        "input_size": list(input_size),
        "feature_size": feat,
        "spatial_dims": dims,
        "path": mode,
        "status": "ok",
        "search_map_shape": list(smap.shape),
        "pyramid_ms": 1000 * statistics.median(t_pyr),
        "lookup_ms": 1000 * statistics.median(t_look),
        "total_ms": 1000 * statistics.median(total),
        "peak_mb": peak / 1e6,
        "peak_method": peak_method,
        "pyramid_tensors_mb": pyramid_bytes / 1e6,
        "all_pairs_volume_mb": all_pairs_bytes(feat) / 1e6,
        "repeats": repeats,
        "max_abs_diff": None,
    }
    if compare:
        other = CorrelationSearch(dims, RADIUS, LEVELS, "local" if mode == "all_pairs" else "all_pairs").to(device)
        with torch.no_grad():
            smap2 = other.lookup(other.pyramid(h_fixed, h_moving), h_fixed, ddf)
        row["max_abs_diff"] = float((smap - smap2).abs().max())
        row["max_abs_value"] = float(smap.abs().max())
    return row


# --------------------------------------------------------------------------- driver


def _not_run(input_size: List[int], mode: str, reason: str) -> Dict[str, Any]:
    feat = [s // 2 for s in input_size]
    return {
        "input_size": list(input_size),
        "feature_size": feat,
        "spatial_dims": len(input_size),
        "path": mode,
        "status": "not run: " + reason,
        "all_pairs_volume_mb": all_pairs_bytes(feat) / 1e6,
        "max_abs_diff": None,
    }


def _spawn(args: argparse.Namespace, input_size: List[int], mode: str, compare: bool) -> Dict[str, Any]:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--_case", "x".join(str(s) for s in input_size), mode,
        "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]
    if args.cuda:
        cmd.append("--cuda")
    if compare:
        cmd.append("--_compare")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        reason = "killed (out of memory?)" if proc.returncode < 0 else f"exit {proc.returncode}"
        row = _not_run(input_size, mode, "failed, " + reason)
        row["stderr_tail"] = proc.stderr[-2000:]
        return row
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    row = _not_run(input_size, mode, "no result")
    row["stderr_tail"] = proc.stderr[-2000:]
    return row


def _guard(args: argparse.Namespace, input_size: List[int]) -> Optional[str]:
    """Reason not to run an all-pairs case, or None."""
    vol = all_pairs_bytes([s // 2 for s in input_size])
    if vol > args.max_gb * 1e9:
        return f"volume {vol / 1e9:.2f} GB > --max_gb {args.max_gb:g}"
    if args.cuda:
        import torch

        free, _ = torch.cuda.mem_get_info()
        if PEAK_FACTOR * vol > free:
            return f"estimated peak {PEAK_FACTOR * vol / 1e9:.1f} GB > free GPU memory {free / 1e9:.1f} GB"
    else:
        avail = _mem_available_bytes()
        if avail is not None and PEAK_FACTOR * vol > 0.9 * avail:
            return f"estimated peak {PEAK_FACTOR * vol / 1e9:.1f} GB > 90% of MemAvailable {avail / 1e9:.1f} GB"
    return None


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: List[Dict[str, Any]]) -> str:
    head = (
        "| input | features | path | pyramid ms | lookup ms | pyramid + lookup ms | peak MB (measured) "
        "| all-pairs volume MB (theory) | max abs diff | status |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                "x".join(map(str, r["input_size"])),
                "x".join(map(str, r["feature_size"])),
                r["path"],
                _fmt(r.get("pyramid_ms"), ".1f"),
                _fmt(r.get("lookup_ms"), ".1f"),
                _fmt(r.get("total_ms"), ".1f"),
                _fmt(r.get("peak_mb"), ".1f"),
                _fmt(r.get("all_pairs_volume_mb"), ".1f"),
                _fmt(r.get("max_abs_diff"), ".2e"),
                r["status"],
            )
        )
    return head + "\n".join(lines) + "\n"


def _write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="JSON output path (atomic write)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case after the cold one (median)")
    p.add_argument("--max_gb", type=float, default=8.0, help="skip all-pairs cases whose volume exceeds this (GB)")
    p.add_argument("--cuda", action="store_true", help="run on the GPU, peak = torch.cuda.max_memory_allocated")
    p.add_argument("--all_pairs_3d", action="store_true", help="also try the 3D all-pairs volume (guarded)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    p.add_argument("--_case", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--_compare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            print("--cuda given but CUDA is not available", file=sys.stderr)
            return 2

    if args._case:
        size = [int(s) for s in args._case[0].split("x")]
        row = run_case(size, args._case[1], args.repeats, args.threads, args.cuda, args._compare)
        print(json.dumps(row))
        return 0

    t_start = time.time()
    rows: List[Dict[str, Any]] = []
    plan = []
    for size in CASES_2D:
        for mode in ("all_pairs", "local"):
            plan.append((list(size), mode, mode == "all_pairs" and list(size) == list(CASES_2D[0])))
    plan.append((list(CASE_3D), "local", False))
    plan.append((list(CASE_3D), "all_pairs", False))
    for size, mode, compare in plan:
        label = "x".join(map(str, size)) + " " + mode
        if mode == "all_pairs":
            if len(size) == 3 and not args.all_pairs_3d:
                reason = "local path only in 3D (pass --all_pairs_3d to try)"
            else:
                reason = _guard(args, size)
            if reason is not None:
                print(f"[bench] {label}: not run ({reason})", file=sys.stderr, flush=True)
                rows.append(_not_run(size, mode, reason))
                continue
        print(f"[bench] {label} ...", file=sys.stderr, flush=True)
        rows.append(_spawn(args, size, mode, compare))

    table = markdown(rows)
    print(table)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    import torch

    payload = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": torch.cuda.get_device_name(0) if args.cuda else (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "loadavg_at_end": load,
        "settings": {"feature_channels": FEATURE_CHANNELS, "radius": RADIUS, "levels": LEVELS, "batch": 1, "dtype": "float32"},
        "wall_s": time.time() - t_start,
        "rows": rows,
        "markdown": table,
    }
    if args.out is not None:
        _write_json_atomic(args.out, payload)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
