"""``tools/benchmark.py`` end to end, as a subprocess, on 2 real test pairs of hippocampus3d and
of hc18_reg2d.

Methods: ``identity``, ``ants_syn``, the ``voxelmorph`` bundle when its weights for the task
exist, and (hc18_reg2d) a plugin method that raises on the second pair. Checks: the output
files; identity rows equal the unregistered metrics computed directly from the raw label files
with ``morphzoo.metrics``; a raising method is recorded per pair and does not abort the run;
the Learn2Reg export (names, shape, convention); the README block. Missing data fails the tests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import map_coordinates

from morphzoo.metrics import label_overlap_and_distance
from morphzoo.paths import data_root, datalist_path, require_data
from tests.conftest import REPO

HERE = Path(__file__).resolve().parent
TOOL = REPO / "tools" / "benchmark.py"
MODEL = {"hippocampus3d": "model.pt", "hc18_reg2d": "model_hc18_reg2d.pt"}


def _methods(task: str) -> list[str]:
    methods = ["identity", "ants_syn"]
    if (REPO / "bundles" / "voxelmorph" / "models" / MODEL[task]).is_file():
        methods.append("voxelmorph")
    return methods


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    out = subprocess.run([sys.executable, str(TOOL), *args, "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"benchmark failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-4000:]}"
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def hippo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, list[str]]:
    require_data("hippocampus")
    out = tmp_path_factory.mktemp("bench_hippocampus3d")
    methods = _methods("hippocampus3d")
    proc = _run(["--task", "hippocampus3d", "--pairs", "2", "--methods", ",".join(methods), "--out", str(out), "--learn2reg-export", "--figures", "1"])
    return out, proc, methods


@pytest.fixture(scope="module")
def hc18_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, list[str], Path]:
    require_data("hc18")
    out = tmp_path_factory.mktemp("bench_hc18")
    readme = out / "README.md"
    readme.write_text(
        "# Demo\n\n<!-- results:hc18_reg2d:start -->\nold table\n<!-- results:hc18_reg2d:end -->\n\n"
        "<!-- results:hippocampus3d:start -->\nother task\n<!-- results:hippocampus3d:end -->\n"
    )
    methods = _methods("hc18_reg2d") + ["flaky=bench_plugins:fail_on_second_pair"]
    proc = _run(["--task", "hc18_reg2d", "--pairs", "2", "--methods", ",".join(methods), "--out", str(out), "--readme", str(readme), "--threads", "1"])
    return out, proc, [m.split("=")[0] for m in methods], readme


# ---------------------------------------------------------------------------- hippocampus3d
def _hippo_label(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).astype(np.int16)
    arr[~np.isin(arr, [0, 1, 2])] = 0  # the known -2 defect, mapped as the pipeline does
    return arr, tuple(float(z) for z in img.header.get_zooms()[:3])


def test_hippocampus3d_outputs_and_table(hippo_run) -> None:
    out, proc, methods = hippo_run
    for name in ("pairs.csv", "summary.md", "summary.json", "run.json", "dice_boxplot.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "figures").glob("000_*.png"))) == len(methods)
    rows = _rows(out / "pairs.csv")
    assert [r["method"] for r in rows] == methods * 2 and not any(r["error"] for r in rows if "error" in r)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == methods and all(s["pairs"] == 2 for s in summary.values())
    assert summary["ants_syn"]["speedup"]["median"] == 1.0 and summary["identity"]["parameters"] == 0
    assert summary["ants_syn"]["dice"]["mean"] > summary["identity"]["dice"]["mean"] + 0.1  # SyN registers
    if "voxelmorph" in methods:
        assert summary["voxelmorph"]["parameters"] > 0 and "speedup" in summary["voxelmorph"]
    run = json.loads((out / "run.json").read_text())
    assert run["pairs"] == 2 and run["methods"] == methods and run["wall_s"] > 0
    assert "speed-up vs ants_syn (median)" in proc.stdout and "| ants_syn | 2 |" in proc.stdout and "wall time:" in proc.stdout
    assert "dice_1" in proc.stdout and "hd95" in proc.stdout and "folding_percent" in proc.stdout


def test_hippocampus3d_identity_rows_are_the_unregistered_metrics(hippo_run) -> None:
    out, _, _ = hippo_run
    items = json.loads(datalist_path("hippocampus3d").read_text())["test"][:2]
    rows = [r for r in _rows(out / "pairs.csv") if r["method"] == "identity"]
    for item, row in zip(items, rows):
        mov, _ = _hippo_label(data_root() / item["moving_label"])
        fix, spacing = _hippo_label(data_root() / item["fixed_label"])
        ref = label_overlap_and_distance(mov, fix, [1, 2], spacing=spacing)
        for key in ("dice", "dice_1", "dice_2", "hd95", "assd", "hd95_1", "assd_2"):
            assert float(row[key]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
        assert float(row["folding_percent"]) == 0.0 and float(row["sdlogj"]) == 0.0


def test_hippocampus3d_learn2reg_export(hippo_run) -> None:
    out, _, methods = hippo_run
    items = json.loads(datalist_path("hippocampus3d").read_text())["test"][:2]
    names = []
    for item in items:
        f, m = (int(item[f"{r}_subject"].split("_")[-1]) for r in ("fixed", "moving"))
        names.append(f"disp_{f:04d}_0000_{m:04d}_0000.npz")
    assert names[0] == "disp_0225_0000_0367_0000.npz"
    for method in methods:
        assert sorted(p.name for p in (out / "learn2reg" / method).iterdir()) == sorted(names)
    rows = {(r["method"], r["pair"].split("_", 1)[0]): r for r in _rows(out / "pairs.csv")}
    for k, (item, name) in enumerate(zip(items, names)):
        zero = np.load(out / "learn2reg" / "identity" / name)
        assert list(zero.keys()) == ["arr_0"] and zero["arr_0"].shape == (64, 64, 64, 3) and not zero["arr_0"].any()
        disp = np.load(out / "learn2reg" / "ants_syn" / name)["arr_0"]
        assert disp.shape == (64, 64, 64, 3) and disp.dtype == np.float32 and np.abs(disp).max() > 1
        # Learn2Reg's convention: warped = map_coordinates(moving, identity + disp); its label Dice
        # is the Dice the benchmark measured with MONAI Warp
        mov, _ = _hippo_label(data_root() / item["moving_label"])
        fix, _ = _hippo_label(data_root() / item["fixed_label"])
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in mov.shape], indexing="ij")).astype(np.float32)
        warped = map_coordinates(mov, grid + np.moveaxis(disp, -1, 0), order=0, mode="constant", cval=0)
        dice = label_overlap_and_distance(warped, fix, [1, 2], distances=False)["dice"]
        assert dice == pytest.approx(float(rows[("ants_syn", f"{k:03d}")]["dice"]), abs=0.02)


# ---------------------------------------------------------------------------- hc18_reg2d
def _png_label(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path))
    arr = arr[..., 0] if arr.ndim == 3 else arr
    return (arr > 127).astype(np.int16)


def test_hc18_failing_method_does_not_abort(hc18_run) -> None:
    out, proc, methods, _ = hc18_run
    rows = _rows(out / "pairs.csv")
    assert [r["method"] for r in rows] == methods * 2
    flaky = [r for r in rows if r["method"] == "flaky"]
    assert not flaky[0]["error"] and float(flaky[0]["dice"]) > 0
    assert "RuntimeError: deliberate failure on the second pair" in flaky[1]["error"] and flaky[1]["dice"] == ""
    assert not any(r["error"] for r in rows if r["method"] != "flaky")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flaky"]["pairs"] == 1 and summary["flaky"]["failed"] == 1
    assert all(summary[m]["pairs"] == 2 for m in methods if m != "flaky")
    assert "| flaky | 1 (1 failed) |" in proc.stdout and "flaky: 1" in proc.stdout


def test_hc18_identity_rows_are_the_unregistered_metrics(hc18_run) -> None:
    out, _, _, _ = hc18_run
    items = json.loads(datalist_path("hc18_reg2d").read_text())["test"][:2]
    rows = [r for r in _rows(out / "pairs.csv") if r["method"] == "identity"]
    for item, row in zip(items, rows):
        mov = _png_label(data_root() / item["moving_label"])
        fix = _png_label(data_root() / item["fixed_label"])
        assert mov.shape == fix.shape  # same size: no resampling involved
        ps = float(item["fixed_pixel_size_mm"])  # distances in mm with the fixed image's pixel size
        ref = label_overlap_and_distance(mov, fix, [1], spacing=(ps, ps))
        for key in ("dice", "hd", "hd95", "assd"):
            assert float(row[key]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
        assert float(row["folding_count"]) == 0.0


def test_hc18_readme_block(hc18_run) -> None:
    out, _, _, readme = hc18_run
    text = readme.read_text()
    assert "old table" not in text and "other task" in text and text.startswith("# Demo\n")
    block = text[text.index("<!-- results:hc18_reg2d:start -->") : text.index("<!-- results:hc18_reg2d:end -->")]
    assert "python tools/benchmark.py --task hc18_reg2d --pairs 2" in block and "| ants_syn | 2 |" in block
    assert "Generated on " in block and "wall time" in block
    assert (out / "summary.md").read_text().strip() in block


# ---------------------------------------------------------------------------- --pair-set
def _run_pair_set(tmp_path: Path, pair_set: str, pairs: int) -> tuple[subprocess.CompletedProcess, list[dict], dict, Path]:
    """The identity method on the first ``pairs`` of a hippocampus2d pair set: (process, pairs.csv rows, datalist, out)."""
    require_data("hippocampus")
    datalist = json.loads(datalist_path("hippocampus2d").read_text())
    out = tmp_path / "bench"
    proc = _run(["--task", "hippocampus2d", "--pair-set", pair_set, "--pairs", str(pairs), "--methods", "identity",
                 "--out", str(out), "--figures", "0", "--no-distances", "--threads", "1"])
    return proc, _rows(out / "pairs.csv"), datalist, out


def test_atlas_pair_set(tmp_path: Path) -> None:
    """``--pair-set atlas_test_pairs`` evaluates every test subject onto the datalist's atlas."""
    proc, rows, datalist, out = _run_pair_set(tmp_path, "atlas_test_pairs", 3)
    expected = datalist["atlas_test_pairs"][:3]
    assert [r["moving"] for r in rows] == [p["moving"] for p in expected]
    assert {r["fixed"] for r in rows} == {datalist["atlas"]["image"]} and expected[0]["moving"] != datalist["test"][0]["moving"]
    assert json.loads((out / "run.json").read_text())["pair_set"] == "atlas_test_pairs"
    assert "3 atlas_test_pairs pairs" in proc.stderr
    bad = subprocess.run([sys.executable, str(TOOL), "--task", "hippocampus2d", "--pair-set", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--pair-set" in bad.stderr


def test_validation_subject_pair_set(tmp_path: Path) -> None:
    """``--pair-set validation_subject_pairs`` takes a prefix of every ordered pair of validation subjects."""
    from morphzoo.data import validation_subject_pairs

    proc, rows, datalist, out = _run_pair_set(tmp_path, "validation_subject_pairs", 25)
    expected = validation_subject_pairs(datalist)[:25]
    assert len(rows) == 25 > len(datalist["validation_pairs"])  # more than the 20 committed pairs
    assert [(r["moving"], r["fixed"]) for r in rows] == [(p["moving"], p["fixed"]) for p in expected]
    assert json.loads((out / "run.json").read_text())["pair_set"] == "validation_subject_pairs"
    assert "25 validation_subject_pairs pairs" in proc.stderr


def test_summary_only_rebuilds_the_same_tables(hc18_run, tmp_path) -> None:
    """``--summary-only`` registers nothing: from the run's pairs.csv and run.json it rebuilds the
    same summary and README block (the original command kept), e.g. after a change of columns."""
    import shutil

    out, _, _, readme = hc18_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "summary.md").unlink()
    text = readme.read_text()
    proc = _run(["--task", "hc18_reg2d", "--out", str(copy), "--summary-only", "--readme", str(readme)])
    assert (copy / "summary.md").read_text() == (out / "summary.md").read_text()
    assert readme.read_text() == text  # the same block, the same original command
    assert "| identity | 2 |" in proc.stdout
    with pytest.raises(AssertionError, match="not found"):
        _run(["--task", "hc18_reg2d", "--out", str(tmp_path / "empty"), "--summary-only"])
