"""Download helpers and the prepare_data CLI, offline: the network call is replaced by a copy of a generated archive."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageDraw

import morphzoo.data.download as download
from morphzoo.data import list_hc18, list_hippocampus, load_hc18_mask
from morphzoo.paths import datalist_path
from tests.conftest import REPO


def _fake_download(sources: dict[str, Path], calls: list[str]):
    """A stand-in for monai.apps.download_url that copies the local file registered for the URL."""

    def fake(
        url: str, filepath: str | Path = "", hash_val: str | None = None, hash_type: str = "md5", progress: bool = True
    ) -> None:
        calls.append(url)
        key = next(k for k in sources if k in url)
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[key], filepath)

    return fake


def test_download_msd_hippocampus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "build" / "Task04_Hippocampus"
    for idx, shape in ((1, (35, 51, 33)), (4, (40, 66, 37))):
        for sub, data in (("imagesTr", np.ones(shape, np.float32)), ("labelsTr", np.ones(shape, np.uint8))):
            (build / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(build / sub / f"hippocampus_{idx:03d}.nii.gz"))
    (build / "imagesTr" / "._hippocampus_001.nii.gz").write_bytes(b"\x00mac")
    (build / "dataset.json").write_text("{}")
    archive = tmp_path / "fake.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(build, arcname="Task04_Hippocampus")

    calls: list[str] = []
    monkeypatch.setattr(download, "download_url", _fake_download({"Task04_Hippocampus": archive}, calls))
    root = tmp_path / "data"
    out = download.download_msd_hippocampus(root)
    assert out == (root / "hippocampus").resolve() and len(calls) == 1
    items = list_hippocampus(out)
    assert [it["subject"] for it in items] == ["hippocampus_001", "hippocampus_004"]
    assert all(nib.load(str(it[k])).shape == (64, 64, 64) for it in items for k in ("image", "label"))
    assert not (root / "downloads" / "msd_extract").exists()
    download.download_msd_hippocampus(root)  # present: no second download
    assert len(calls) == 1


def test_download_hc18(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "build"
    (build / "training_set").mkdir(parents=True)
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for name, size in (("000_HC", (80, 54)), ("001_HC", (78, 55)), ("001_2HC", (80, 54))):
        Image.new("L", size, 90).save(build / "training_set" / f"{name}.png")
        ann = Image.new("L", size, 0)  # the original release: ellipse outline, single channel
        ImageDraw.Draw(ann).ellipse((10, 10, 60, 45), outline=255, width=2)
        ann.save(build / "training_set" / f"{name}_Annotation.png")
        rows.append(f"{name}.png,0.1,{100 + len(rows)}")
    csv_file = tmp_path / "hc.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    archive = tmp_path / "fake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for png in sorted((build / "training_set").iterdir()):
            zf.write(png, f"training_set/{png.name}")
        zf.writestr("__MACOSX/training_set/._000_HC.png", b"junk")

    calls: list[str] = []
    monkeypatch.setattr(
        download, "download_url", _fake_download({"training_set.zip": archive, "pixel_size": csv_file}, calls)
    )
    out = download.download_hc18(tmp_path / "data")
    assert len(calls) == 2 and all("zenodo.org/records/1327317" in c for c in calls)
    items = list_hc18(out)
    assert [(it["subject"], it["size_hw"]) for it in items] == [
        ("000", (54, 80)),
        ("001", (54, 80)),
        ("001", (55, 78)),
    ]  # 001_2HC < 001_HC
    ann = Image.open(items[0]["label"])
    assert ann.mode == "RGB"
    mask = load_hc18_mask(items[0]["label"], fill=False)
    assert mask[27, 35] == 1 and mask.sum() > 1000  # stored filled


def _load_tool():
    spec = importlib.util.spec_from_file_location("prepare_data_tool", REPO / "tools" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = _load_tool()
    assert tool.main(["--tasks", "hippocampus2d", "--out", str(tmp_path), "--check-labels"]) == 0
    out = capsys.readouterr().out
    assert "2 file(s) with unexpected values" in out
    assert (
        "hippocampus_003.nii.gz: value -2: 1 voxel(s)" in out and "hippocampus_243.nii.gz: value -2: 1 voxel(s)" in out
    )
    assert "training=176 validation=22 test=100" in out
    written = tmp_path / "hippocampus2d.json"
    assert json.loads(written.read_text()) == json.loads(datalist_path("hippocampus2d").read_text())
    assert written.read_bytes() == datalist_path("hippocampus2d").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["hippocampus2d.json"]
    assert tool.main(["--tasks", "hippocampus2d", "--out", str(tmp_path), "--verify"]) == 0
    written.write_text("{}")
    assert tool.main(["--tasks", "hippocampus2d", "--out", str(tmp_path), "--verify"]) == 1


def test_prepare_data_cli_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tool = _load_tool()
    assert tool.main(["--root", str(tmp_path / "none"), "--tasks", "hc18_seg", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "none/hc18 does not exist" in err and "--download" in err
