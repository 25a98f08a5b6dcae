"""tools/paired_diff.py: paired differences matched by case across per-case CSVs."""

from __future__ import annotations

import csv
import math

import pytest

from tests.conftest import load_tool

paired_diff = load_tool("paired_diff")


def _write(path, rows, case_key):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", case_key, "dice"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_matches_cases_across_files_and_reports_mean_se_and_wins(tmp_path, capsys):
    a = _write(tmp_path / "a.csv", [{"method": "m", "pair": p, "dice": d} for p, d in (("p1", 0.5), ("p2", 0.7), ("p3", 0.9))], "pair")
    # the reference comes from another run, in another order, with an extra case the method lacks
    b = _write(tmp_path / "b.csv", [{"method": "ref", "pair": p, "dice": d} for p, d in (("p3", 0.8), ("p1", 0.5), ("p2", 0.4), ("p9", 0.1))], "pair")
    assert paired_diff.main([str(a), str(b), "--method", "m", "--against", "ref"]) == 0
    out = capsys.readouterr().out
    d = [0.0, 0.3, 0.1]
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    assert f"{mean:+.3f} ± {se:.3f}" in out and "2/3 cases won" in out


def test_image_column_and_clear_errors(tmp_path):
    c = _write(tmp_path / "images.csv", [{"method": m, "image": i, "dice": v} for m, i, v in
                                         (("x", "i1", 0.6), ("x", "i2", 0.8), ("y", "i1", 0.5), ("y", "i2", 0.9))], "image")
    mean, se, won, n = paired_diff.paired(*(paired_diff.load_cases([c], "dice")[k] for k in ("x", "y")))
    assert (round(mean, 6), won, n) == (0.0, 1, 2) and se > 0
    with pytest.raises(SystemExit, match="not in"):
        paired_diff.main([str(c), "--method", "x", "--against", "nope"])
    with pytest.raises(SystemExit, match="not found"):
        paired_diff.main([str(tmp_path / "missing.csv"), "--method", "x", "--against", "y"])


def test_tagged_files_pair_one_method_across_runs_and_errors_win_when_lower(tmp_path, capsys):
    """``TAG=PATH`` keeps two runs of the same method apart; for an error column the lower value wins."""
    new = tmp_path / "new.csv"
    old = tmp_path / "old.csv"
    for path, errors in ((new, (1.0, 2.0, 1.5)), (old, (2.0, 1.0, 3.0))):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["method", "image", "hc_abs_error_mm"])
            w.writeheader()
            w.writerows({"method": "seg", "image": f"i{k}", "hc_abs_error_mm": e} for k, e in enumerate(errors))
    assert paired_diff.main([f"new={new}", f"old={old}", "--method", "new:seg", "--against", "old:seg",
                             "--key", "hc_abs_error_mm"]) == 0
    out = capsys.readouterr().out
    d = [-1.0, 1.0, -1.5]
    mean = sum(d) / 3
    assert f"{mean:+.3f}" in out and "2/3 cases won (lower is better)" in out
    # without tags the two files' rows are one method's, the later file winning: nothing to compare against
    with pytest.raises(SystemExit, match="not in"):
        paired_diff.main([str(new), str(old), "--method", "new:seg", "--against", "old:seg"])
    assert paired_diff.lower_is_better("hd95") and paired_diff.lower_is_better("folding_percent")
    assert not paired_diff.lower_is_better("dice") and not paired_diff.lower_is_better("ncc")


def test_correlation_of_the_per_case_values(tmp_path, capsys):
    """``--correlation`` adds Pearson and Spearman over the common cases: exact for a linear and a monotone pair."""
    c = tmp_path / "images.csv"
    with open(c, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "image", "hc_abs_error_mm"])
        w.writeheader()
        for k, x in enumerate((1.0, 2.0, 3.0, 4.0)):
            w.writerow({"method": "a", "image": f"i{k}", "hc_abs_error_mm": x})
            w.writerow({"method": "lin", "image": f"i{k}", "hc_abs_error_mm": 2 * x + 1})
            w.writerow({"method": "mono", "image": f"i{k}", "hc_abs_error_mm": x ** 3})
    assert paired_diff.main([str(c), "--method", "a", "--against", "lin", "mono", "--key", "hc_abs_error_mm", "--correlation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].strip() == "per-case hc_abs_error_mm: Pearson r = 1.00, Spearman = 1.00 over 4 cases"
    pearson_mono = float(lines[3].split("Pearson r = ")[1].split(",")[0])
    assert 0.9 < pearson_mono < 1.0 and "Spearman = 1.00" in lines[3]
    paired_diff.main([str(c), "--method", "a", "--against", "lin", "--key", "hc_abs_error_mm"])
    assert "Pearson" not in capsys.readouterr().out
