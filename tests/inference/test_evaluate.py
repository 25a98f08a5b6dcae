"""evaluate_pairs / summarize / summary_markdown / load_pair_item (morphzoo.inference.evaluate) on real pairs."""

from __future__ import annotations

import csv
import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from morphzoo.inference import RegistrationRunner, evaluate_pairs, identity_registrar, load_pair_item, summarize, summary_markdown
from morphzoo.inference.registrar import Registrar
from morphzoo.metrics import label_overlap_and_distance
from morphzoo.transforms.io import InputError


def _item(a, b):
    return {
        "moving": f"hippocampus/img/hippocampus_{a}.nii.gz",
        "fixed": f"hippocampus/img/hippocampus_{b}.nii.gz",
        "moving_label": f"hippocampus/label/hippocampus_{a}.nii.gz",
        "fixed_label": f"hippocampus/label/hippocampus_{b}.nii.gz",
    }


def _label(hippo_dir, sid):
    arr = np.asarray(nib.load(str(hippo_dir / "label" / f"hippocampus_{sid}.nii.gz")).dataobj)
    return np.where(np.isin(arr, [0, 1, 2]), arr, 0)


def _broken_registrar():
    def field_fn(m, f):
        raise RuntimeError("deliberate failure")

    return Registrar(None, 3, device="cpu", labels=[0, 1, 2], size_multiple=1, field_fn=field_fn)


def test_evaluate_pairs_with_a_failing_method(tmp_path, hippo_dir, caplog):
    items = [_item("004", "006"), _item("003", "004"), {"moving": "hippocampus/img/missing.nii.gz", "fixed": "hippocampus/img/hippocampus_004.nii.gz"}]
    methods = {"identity": identity_registrar(3, labels=[0, 1, 2], device="cpu"), "broken": _broken_registrar()}
    with caplog.at_level(logging.WARNING):
        summary = evaluate_pairs(methods, items, tmp_path / "eval", labels=[0, 1, 2], num_figures=0, distances=False, progress=False)
    out = tmp_path / "eval"
    for name in ("pairs.csv", "summary.json", "summary.md"):
        assert (out / name).is_file(), name
    # hippocampus_003's stray -2 is mapped with a warning naming the file
    assert any("hippocampus_003.nii.gz" in r.getMessage() and "-2" in r.getMessage() for r in caplog.records)

    with open(out / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # 3 pairs x 2 methods, failures included
    broken = [r for r in rows if r["method"] == "broken"]
    assert all("deliberate failure" in r["error"] for r in broken[:2])
    assert all("missing.nii.gz" in r["error"] for r in rows[-2:])  # unreadable pair: an error row per method
    ident = [r for r in rows if r["method"] == "identity" and not r["error"]]
    assert len(ident) == 2

    # identity Dice = Dice of the unwarped labels
    expected = [
        label_overlap_and_distance(_label(hippo_dir, a), _label(hippo_dir, b), [1, 2], distances=False)["dice"]
        for a, b in (("004", "006"), ("003", "004"))
    ]
    np.testing.assert_allclose([float(r["dice"]) for r in ident], expected, atol=1e-6)
    assert summary["identity"]["pairs"] == 2 and summary["identity"]["failed"] == 1
    assert summary["broken"]["pairs"] == 0 and summary["broken"]["failed"] == 3
    assert summary["identity"]["dice"]["mean"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert summary["identity"]["folding_count"]["mean"] == 0.0
    assert "dice" not in summary["broken"]
    assert json.loads((out / "summary.json").read_text()) == summary

    md = (out / "summary.md").read_text()
    assert md == summary_markdown(summary)
    lines = md.strip().splitlines()
    assert len(lines) == 4  # header, rule, one row per method
    assert any(l.startswith("| identity | 2 (1 failed) |") for l in lines)
    assert any(l.startswith("| broken | 0 (3 failed) |") for l in lines)
    assert f"{np.mean(expected):.3f}" in md


def test_summarize_and_markdown_analytic():
    rows = [
        {"method": "a", "dice": 0.5, "time_ms": 10.0},
        {"method": "a", "dice": 0.7, "time_ms": 30.0},
        {"method": "a", "dice": float("nan"), "time_ms": 20.0},
        {"method": "b", "error": "boom"},
        {"method": "b", "dice": 0.9, "time_ms": 5.0, "error": ""},
    ]
    s = summarize(rows, metrics=("dice", "time_ms"))
    assert s["a"]["pairs"] == 3 and s["a"]["failed"] == 0
    assert s["a"]["dice"]["mean"] == pytest.approx(0.6) and s["a"]["dice"]["std"] == pytest.approx(0.1)
    assert s["a"]["time_ms"]["median"] == 20.0
    assert s["b"] == {"pairs": 1, "failed": 1, "dice": {"mean": 0.9, "std": 0.0, "median": 0.9}, "time_ms": {"mean": 5.0, "std": 0.0, "median": 5.0}}
    md = summary_markdown(s, metrics=("dice", "time_ms"))
    assert "| method | pairs | dice | ms/pair (median) |" in md
    assert "| a | 3 | 0.600 ± 0.100 | 20.0 |" in md
    assert "| b | 1 (1 failed) | 0.900 ± 0.000 | 5.0 |" in md


def test_load_pair_item_slices_and_policy(hippo_dir):
    item = {**_item("003", "004"), "slice_axis": 1, "slice_index": 30}
    mov, fix, mlab, flab = load_pair_item(item, labels=[0, 1, 2])
    assert mov.shape == fix.shape == mlab.shape == flab.shape == (64, 64)
    assert mlab.array.min() >= 0
    np.testing.assert_array_equal(mlab.array, _label(hippo_dir, "003")[:, 30, :])
    with pytest.raises(InputError, match="-2"):
        load_pair_item(_item("003", "004"), labels=[0, 1, 2], label_policy="error")


def test_runner_needs_both_paths(tmp_path, capsys):
    """On the command line a user's error is one line on stderr and exit status 2, nothing written."""
    runner = RegistrationRunner(identity_registrar(3, device="cpu"), str(tmp_path / "out"), moving="a.nii.gz")
    with pytest.raises(SystemExit) as exc:
        runner.run()
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: give both --moving and --fixed (or neither, to register the test split)."
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="both"):  # the library call underneath raises as usual
        runner._run()


def test_runner_reads_the_datalist_only_for_the_split(tmp_path, hippo_img, hippo_img2):
    """Registering your own pair needs no datalist; the test split names a missing datalist plainly."""
    reg = identity_registrar(3, labels=[0, 1, 2], device="cpu")
    missing = tmp_path / "nowhere" / "hippocampus3d.json"
    out = RegistrationRunner(reg, str(tmp_path / "own"), moving=str(hippo_img[0]), fixed=str(hippo_img2[0]), datalist=str(missing)).run()
    assert (tmp_path / "own" / "warped.nii.gz").is_file() and out[0]["time_ms"] > 0
    with pytest.raises(InputError, match="datalist not found; pass --datalist"):
        RegistrationRunner(reg, str(tmp_path / "split"), datalist=str(missing))._run()
    assert RegistrationRunner(identity_registrar(3, device="cpu"), str(tmp_path), overwrite="true").overwrite is True
    assert RegistrationRunner(identity_registrar(3, device="cpu"), str(tmp_path), overwrite="false").overwrite is False
