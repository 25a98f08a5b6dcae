"""tools/step_time.py: a real training step of a bundle, timed by stage, before and after its cuts."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


def _tool():
    spec = importlib.util.spec_from_file_location("step_time", REPO / "tools" / "step_time.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configs_and_tasks_of_a_bundle():
    tool = _tool()
    files, task = tool.bundle_configs(REPO / "bundles" / "voxelmorph", None)
    assert task == json.loads((REPO / "bundles" / "voxelmorph" / "configs" / "train.json").read_text())["task"] and len(files) == 1
    tasks = tool.bundle_tasks(REPO / "bundles" / "voxelmorph")
    assert tasks[0] == task and "hc18_reg2d" in tasks
    files, other = tool.bundle_configs(REPO / "bundles" / "voxelmorph", "hc18_reg2d")
    assert other == "hc18_reg2d" and files[1].endswith("task_hc18_reg2d.json")
    with pytest.raises(SystemExit, match="no task"):
        tool.bundle_configs(REPO / "bundles" / "voxelmorph", "nope")


def test_table_speed_up_and_failures():
    tool = _tool()
    base = {s + "_ms": 10.0 for s in tool.STAGES}
    recs = [
        {**base, "bundle": "b", "task": "t", "variant": "before", "cuts": ["cache", "keep_heap"], "batch_size": 2, "pairs_per_s": 1.0, "peak_rss_mb": 5.0, "total_ms": 300.0},
        {**base, "bundle": "b", "task": "t", "variant": "after", "cuts": [], "batch_size": 2, "pairs_per_s": 2.0, "peak_rss_mb": 5.0, "total_ms": 100.0},
        {**base, "bundle": "b", "task": "t", "variant": "bf16", "cuts": ["bf16"], "batch_size": 2, "pairs_per_s": 4.0, "peak_rss_mb": 5.0, "total_ms": 50.0, "bf16_native": False},
        {"bundle": "c", "task": "t", "variant": "after", "error": "boom"},
    ]
    md = tool.table(recs)
    assert "before (no cache, no keep-heap)" in md and "3.00x" in md and "failed: boom" in md
    assert "bf16 (after + bf16 autocast, not native: fp32)" in md and "6.00x" in md
    assert all(line.count("|") == md.splitlines()[0].count("|") for line in md.splitlines())


def test_one_real_step_of_fetal_us_seg(data_dir):
    tool = _tool()
    rec = tool.time_one(REPO / "bundles" / "fetal_us_seg", None, "before", steps=1, warmup=1, threads=1)
    assert rec["cuts"] == ["cache", "keep_heap"] and rec["task"] == "hc18_seg" and rec["cpu_ms"] > 0 and rec["steps"] == 1
    stages = ("data", "forward", "loss", "backward", "optimizer", "other")
    assert all(rec[s + "_ms"] > 0 for s in stages)
    assert sum(rec[s + "_ms"] for s in stages) == pytest.approx(rec["total_ms"], rel=1e-9)
    assert rec["pairs_per_s"] == pytest.approx(rec["batch_size"] / rec["total_ms"] * 1000.0)


def test_before_variant_switches_a_shipped_bf16_off(data_dir):
    """voxelmorph's hippocampus3d config ships ``precision: auto``; its ``before`` row must be fp32."""
    tool = _tool()
    rec = tool.time_one(REPO / "bundles" / "voxelmorph", None, "before", steps=1, warmup=0, threads=1)
    assert rec["task"] == "hippocampus3d" and "bf16" in rec["cuts"] and rec["steps"] == 1
