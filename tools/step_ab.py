#!/usr/bin/env python
"""Same-process A/B of a 3D registration network's training step: channels-first vs channels-last.

Builds the ``network_def`` of a bundle's ``configs/train.json`` (plus ``task_hippocampus3d.json``
where the bundle's default task is another) twice with the same seed, one copy in
``torch.channels_last_3d``, and runs interleaved training steps (forward, MONAI ``Warp``, an MSE +
field-magnitude loss, backward, Adam) on one random 64^3 pair at one thread, with
:func:`morphzoo.engines.keep_heap` on. Prints one JSON line per bundle: the median process CPU
seconds of each arm (first step left out), their ratio, the page faults per step, and the largest
difference between the two arms' first fields (the same network: it must be float noise). CPU time
rather than wall time, so that other jobs on the machine change the ratio little.

``--no-keep-heap`` leaves glibc's allocator settings alone: run the tool once with and once
without it to compare the ``keep_heap`` cut (CPU time and page faults per step).

Usage::

    python tools/step_ab.py voxelmorph fmirnet fcn_deep_selfsup
    python tools/step_ab.py voxelmorph --no-keep-heap      # against the line above: keep_heap's cut
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def ab(bundle: str, steps: int = 4) -> dict:
    """Interleaved channels-first / channels-last steps of ``bundle``'s 3D network; the record."""
    from monai.bundle import ConfigParser
    from monai.networks.blocks import Warp

    root = REPO / "bundles" / bundle
    files = [root / "configs" / "train.json"]
    if json.loads(files[0].read_text()).get("task") != "hippocampus3d":
        files.append(root / "configs" / "task_hippocampus3d.json")
    warp = Warp()
    arms = {}
    for cl in (False, True):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser["bundle_root"] = str(root)
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def")
        if cl:
            net = net.to(memory_format=torch.channels_last_3d)
        arms[cl] = (net, torch.optim.Adam(net.parameters(), 1e-4))
    x = torch.rand(1, 2, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    cpu: dict[bool, list[float]] = {False: [], True: []}
    faults: dict[bool, list[int]] = {False: [], True: []}
    first: dict[bool, torch.Tensor] = {}
    for _ in range(steps):
        for cl, (net, opt) in arms.items():
            c0, f0 = time.process_time(), _faults()
            out = net(x)
            ddf = out[0] if isinstance(out, (list, tuple)) else out
            first.setdefault(cl, ddf.detach().contiguous())
            loss = ((warp(x[:, :1], ddf) - x[:, 1:]) ** 2).mean() + (ddf**2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            cpu[cl].append(time.process_time() - c0)
            faults[cl].append(_faults() - f0)
    med = {cl: statistics.median(v[1:]) for cl, v in cpu.items()}
    return {
        "bundle": bundle,
        "cpu_s_channels_first": med[False],
        "cpu_s_channels_last": med[True],
        "ratio": med[False] / med[True],
        "max_field_difference": float((first[False] - first[True]).abs().max()),
        "faults_per_step": {"channels_first": statistics.median(faults[False][1:]), "channels_last": statistics.median(faults[True][1:])},
    }


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    heap = "--no-keep-heap" not in args
    names = [a for a in args if a != "--no-keep-heap"] or ["voxelmorph"]
    torch.set_num_threads(1)
    from morphzoo.engines import keep_heap

    keep_heap(heap)
    for name in names:
        print(json.dumps({**ab(name), "keep_heap": heap}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
