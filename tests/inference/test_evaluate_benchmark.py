"""``evaluate_pairs`` as the benchmark uses it: failures recorded per pair, speed-up against a
reference measured in the same run, parameter counts, the result callback, and the old call form."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from morphzoo.inference import Registrar, evaluate_pairs, identity_registrar, summarize, summary_markdown
from morphzoo.paths import datalist_path, require_data


@pytest.fixture(scope="module")
def items() -> list[dict]:
    require_data("hippocampus")  # fails (never skips) without the data
    return json.loads(datalist_path("hippocampus2d").read_text())["test"][:2]


def _broken(moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("this method always fails")


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        torch.nn.init.zeros_(self.conv.weight)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_failures_recorded_speedup_and_parameters(items: list[dict], tmp_path: Path) -> None:
    methods = {
        "identity": identity_registrar(2, [0, 1, 2], "cpu"),
        "broken": Registrar(None, 2, spatial_size=(64, 64), labels=[0, 1, 2], device="cpu", field_fn=_broken),
        "tiny": Registrar(_TinyNet(), 2, spatial_size=(64, 64), labels=[0, 1, 2], device="cpu"),
    }
    seen: list[tuple[str, int, tuple]] = []

    def on_result(method, item, k, res):
        seen.append((method, k, res.ddf.shape))
        if method == "tiny" and k == 1:
            raise ValueError("export failed")  # counts as this method's failure on this pair

    summary = evaluate_pairs(
        methods, items, tmp_path, labels=[0, 1, 2], num_figures=1, progress=False, reference_method="identity", on_result=on_result
    )

    rows = _rows(tmp_path / "pairs.csv")
    assert [(r["method"], bool(r["error"])) for r in rows] == [
        ("identity", False), ("broken", True), ("tiny", False), ("identity", False), ("broken", True), ("tiny", True),
    ]
    assert all("RuntimeError: this method always fails" in r["error"] for r in rows if r["method"] == "broken")
    assert "ValueError: export failed" in rows[-1]["error"]
    assert seen == [("identity", 0, (2, 64, 64)), ("tiny", 0, (2, 64, 64)), ("identity", 1, (2, 64, 64)), ("tiny", 1, (2, 64, 64))]

    assert summary["identity"]["pairs"] == 2 and summary["identity"]["failed"] == 0
    assert summary["broken"] == {"pairs": 0, "failed": 2}  # no network, no count; no metrics, no speed-up
    assert summary["tiny"]["pairs"] == 1 and summary["tiny"]["failed"] == 1
    # zero-initialised network = identity field: same Dice as the identity row on that pair
    assert summary["tiny"]["dice"]["mean"] == pytest.approx(float(rows[0]["dice"]), abs=1e-6)
    assert summary["identity"]["speedup"] == {"reference": "identity", "median": 1.0, "pairs": 2}
    t_id, t_tiny = float(rows[0]["time_ms"]), float(rows[2]["time_ms"])
    assert summary["tiny"]["speedup"]["median"] == pytest.approx(t_id / t_tiny) and summary["tiny"]["speedup"]["pairs"] == 1
    assert summary["tiny"]["parameters"] == 2 * 2 * 9 + 2
    assert "parameters" not in summary["identity"]  # identity_registrar sets no count; the benchmark sets 0

    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    md = (tmp_path / "summary.md").read_text()
    assert "| broken | 0 (2 failed) |" in md and "speed-up vs identity (median)" in md and "| parameters |" in md
    assert (tmp_path / "dice_boxplot.png").is_file()
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "figures").glob("*.png")) == ["000", "000"]


def test_old_call_form_unchanged(items: list[dict], tmp_path: Path) -> None:
    """The pre-benchmark signature and table (no reference, no counts) still work."""
    summary = evaluate_pairs({"identity": identity_registrar(2, [0, 1, 2], "cpu")}, items[:1], tmp_path, [0, 1, 2], None, 0, False, False)
    assert summary["identity"]["pairs"] == 1 and "speedup" not in summary["identity"]
    md = summary_markdown(summary)
    assert md.splitlines()[0].startswith("| method | pairs | dice |") and "speed-up" not in md and "parameters" not in md
    rows = [{"method": "a", "pair": "p", "dice": 0.5, "time_ms": 10.0}]
    assert summarize(rows) == {"a": {"pairs": 1, "failed": 0, "dice": {"mean": 0.5, "std": 0.0, "median": 0.5}, "time_ms": {"mean": 10.0, "std": 0.0, "median": 10.0}}}
