"""tools/step_ab.py: the channels-first / channels-last A/B runs the same network in both arms."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_both_arms_compute_the_same_field_and_are_timed():
    spec = importlib.util.spec_from_file_location("step_ab", REPO / "tools" / "step_ab.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rec = tool.ab("fcn_deep_selfsup", steps=2)
    assert rec["bundle"] == "fcn_deep_selfsup"
    assert rec["max_field_difference"] < 1e-4  # one network, two memory layouts
    assert rec["cpu_s_channels_first"] > 0 and rec["cpu_s_channels_last"] > 0 and math.isfinite(rec["ratio"])
    assert set(rec["faults_per_step"]) == {"channels_first", "channels_last"}
