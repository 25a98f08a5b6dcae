"""morphzoo.engines.keep_heap: freed tensor memory stays in the heap (fewer page faults), or nothing changes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from morphzoo.engines import keep_heap

_PROBE = """
import json, resource, sys, torch
from morphzoo.engines import keep_heap
applied = keep_heap() if sys.argv[1] == "1" else False
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MB and a 32 MB activation, allocated, written and freed every "step"
    x = torch.empty(16 << 20); x.fill_(1.0); y = torch.empty(8 << 20); y.fill_(2.0); del x, y
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}))
"""


def _faults(enable: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, "1" if enable else "0"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_heap_cuts_page_faults_of_repeated_large_tensors():
    base, kept = _faults(False), _faults(True)
    assert kept["applied"] is True and base["applied"] is False
    # without it every 64 MB block is mmap-ed and zeroed again each time (16,384 faults a step)
    assert base["faults"] > 20 * 16384 * 0.9
    assert kept["faults"] < 0.3 * base["faults"]


def test_keep_heap_disabled_changes_nothing():
    assert keep_heap(False) is False


@pytest.mark.parametrize("kwargs", [{"mmap_threshold_mb": 0}, {"mmap_threshold_mb": 4096}, {"top_pad_mb": -1}])
def test_keep_heap_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="keep_heap"):
        keep_heap(**kwargs)
