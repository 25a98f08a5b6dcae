"""The library does not depend on where the checkout sits: ``morphzoo`` installed non-editable into a
fresh virtual environment, a bundle copied to another folder, no ``datalists/`` and no data folder in
sight, registers a real pair; ``--dataset_dir`` and ``--datalist`` are what the test split uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv (system site packages for torch/monai/...) with morphzoo built from a copy of the source
    and installed as a regular, non-editable package; returns its python."""
    base = tmp_path_factory.mktemp("wheel_install")
    src = base / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "common" / "morphzoo", src / "common" / "morphzoo", ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return py


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MORPHZOO_DATA", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def copied_bundle(tmp_path_factory) -> Path:
    """bundles/voxelmorph copied alone to an unrelated folder (configs, default weights, docs)."""
    dest = tmp_path_factory.mktemp("elsewhere") / "voxelmorph"
    src = REPO / "bundles" / "voxelmorph"
    shutil.copytree(src / "configs", dest / "configs")
    shutil.copytree(src / "docs", dest / "docs")
    (dest / "models").mkdir()
    shutil.copy(src / "models" / "model.pt", dest / "models" / "model.pt")
    return dest


def test_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    code = "import morphzoo, morphzoo.paths as p; print(morphzoo.__file__); print(p.repo_root()); print(p.data_root())"
    out = subprocess.run([str(installed), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    file, repo, data = out.stdout.split()
    assert str(installed.parents[1]) in file and str(REPO) not in file
    assert repo == "None"
    assert data == str(tmp_path / ".cache" / "morphzoo" / "data")


def test_copied_bundle_registers_a_real_pair(installed: Path, copied_bundle: Path, hippo_img, hippo_img2, tmp_path: Path) -> None:
    assert not (copied_bundle / "datalists").exists() and not (copied_bundle.parents[1] / "datalists").exists()
    out = tmp_path / "out"
    cmd = [str(installed), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", ".",
           "--moving", str(hippo_img[0]), "--fixed", str(hippo_img2[0]), "--moving_label", str(hippo_img[1]),
           "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=copied_bundle, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("warped.nii.gz", "warped_label.nii.gz", "ddf.nii.gz", "metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["metrics"]["time_ms"] > 0


def test_dataset_dir_and_datalist_take_effect(installed: Path, copied_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    """The test split of the copied bundle: with --dataset_dir and --datalist it runs; a wrong
    --dataset_dir is what the error names (so the key is really used), with one line and exit 2."""
    datalist = REPO / "datalists" / "hippocampus3d.json"
    base = [str(installed), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", ".",
            "--datalist", str(datalist), "--num_pairs", "1"]
    ok = subprocess.run(base + ["--dataset_dir", str(data_dir), "--output_dir", str(tmp_path / "split")],
                        capture_output=True, text=True, cwd=copied_bundle, env=_env(tmp_path), timeout=600)
    assert ok.returncode == 0, ok.stderr[-4000:]
    first = json.loads(datalist.read_text())["test"][0]
    assert len(list((tmp_path / "split").glob("000_*/warped.nii.gz"))) == 1
    wrong = tmp_path / "no_data_here"
    bad = subprocess.run(base + ["--dataset_dir", str(wrong), "--output_dir", str(tmp_path / "split2")],
                         capture_output=True, text=True, cwd=copied_bundle, env=_env(tmp_path), timeout=600)
    assert bad.returncode == 2
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(wrong / first["moving"]) in last and "does not exist" in last
    assert not (tmp_path / "split2").exists()
