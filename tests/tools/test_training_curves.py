"""tools/training_curves.py: chained stage logs drawn against another run; a missing log is named."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_tool


def _log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_chains_stages_and_reports_best_and_last(tmp_path, capsys):
    tool = load_tool("training_curves")
    s1 = _log(tmp_path / "s1.jsonl", [{"iteration": 10, "val_mean_dice": 0.8}])
    s2 = _log(tmp_path / "s2.jsonl", [{"iteration": 10, "val_mean_dice": 0.9}, {"iteration": 20, "val_mean_dice": 0.85}])
    other = _log(tmp_path / "o.jsonl", [{"iteration": 30, "val_mean_dice": 0.7}])
    out = tmp_path / "fig.png"
    assert tool.main(["--out", str(out), f"cascade={s1}+{s2}", f"single={other}"]) == 0
    text = capsys.readouterr().out
    assert "cascade: 3 points, best val_mean_dice 0.9000, last 0.8500" in text
    assert out.is_file() and out.stat().st_size > 0


def test_missing_log_and_bad_spec_are_refused(tmp_path):
    tool = load_tool("training_curves")
    with pytest.raises(SystemExit, match="nope.jsonl: training log not found"):
        tool.main(["--out", str(tmp_path / "f.png"), f"a={tmp_path / 'nope.jsonl'}"])
    with pytest.raises(SystemExit, match="NAME=LOG"):
        tool.main(["--out", str(tmp_path / "f.png"), "no-equals-sign"])
    assert not (tmp_path / "f.png").exists()
