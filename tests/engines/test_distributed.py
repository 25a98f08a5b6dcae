"""The process group every multi_gpu_train.json starts and ends (morphzoo.engines.distributed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch.distributed as dist

from morphzoo.engines import distributed as mzdist

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh process: a default process group is global state, and its gloo threads outlive
# destroy_process_group while DDP holds the backend, so the test must not share a process.
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from morphzoo.engines import finish_process_group, init_process_group

    store = sys.argv[1]
    created = init_process_group(torch.device("cpu"), init_method=f"file://{store}", rank=0, world_size=1)
    again = init_process_group("cpu")
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    net(torch.ones(4, 3)).sum().backward()
    t = torch.ones(2)
    dist.all_reduce(t)
    out = {"created": created, "again": again, "backend": dist.get_backend(),
           "workers": dist.group.WORLD._get_backend(torch.device("cpu")).options._threads,
           "allreduce": t.tolist(), "finished": finish_process_group(), "initialized": dist.is_initialized(),
           "finished_again": finish_process_group()}
    print(json.dumps(out))
    """
)


def test_cpu_group_has_one_gloo_worker_and_finishes_cleanly(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["created"] is True and out["again"] is False
    assert out["backend"] == mzdist.SERIAL_GLOO
    # one worker: a collective is released before the next one (the final barrier) starts
    assert out["workers"] == 1
    assert out["allreduce"] == [1.0, 1.0]
    assert out["finished"] is True and out["initialized"] is False and out["finished_again"] is False


def test_finish_waits_at_a_barrier_before_destroying(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    assert mzdist.finish_process_group() is True
    assert calls == ["barrier", "destroy"]


def test_init_picks_nccl_for_cuda_devices_and_passes_arguments(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **k: seen.append(k))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 1)
    assert mzdist.init_process_group("cuda:1", timeout=5) is True
    assert seen == [{"backend": "nccl", "timeout": 5}]
    seen.clear()
    assert mzdist.init_process_group("cpu") is True
    assert seen == [{"backend": mzdist.SERIAL_GLOO}]


def test_cpu_backend_falls_back_to_gloo_when_torch_hides_its_options(monkeypatch):
    class NoOptions:
        pass

    monkeypatch.setattr(dist, "ProcessGroupGloo", NoOptions)
    assert mzdist._cpu_backend() == "gloo"
