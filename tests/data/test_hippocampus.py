"""Hippocampus readers: Learn2Reg layout (real data), label defects, MSD layout (generated volumes)."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImaged

from morphzoo.data import (
    MapUnexpectedLabelsd,
    check_label_values,
    clean_label,
    convert_msd_hippocampus,
    list_hippocampus,
    load_hippocampus,
    pad_crop_center,
    scan_hippocampus_labels,
)

# The two real label files holding a stray -2 (one voxel each), per ../shared/data/README.md.
DEFECTS = {"hippocampus_003.nii.gz": {-2: 1}, "hippocampus_243.nii.gz": {-2: 1}}


def test_list_learn2reg(hippocampus_items: list[dict]) -> None:
    assert len(hippocampus_items) == 220
    assert {it["layout"] for it in hippocampus_items} == {"learn2reg"}
    ids = [it["subject"] for it in hippocampus_items]
    assert ids == sorted(ids) and ids[0] == "hippocampus_003"
    assert all(it["image"].is_file() and it["label"].is_file() for it in hippocampus_items)


def test_scan_reports_the_two_defective_files(hippo_dir: Path) -> None:
    report = scan_hippocampus_labels(hippo_dir)
    assert {Path(p).name: counts for p, counts in report.items()} == DEFECTS
    for name in DEFECTS:
        assert check_label_values(hippo_dir / "label" / name) == DEFECTS[name]
    assert check_label_values(hippo_dir / "label" / "hippocampus_004.nii.gz") == {}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_clean_label_maps_to_background_and_warns(
    hippo_dir: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = hippo_dir / "label" / name
    raw = np.asanyarray(nib.load(str(path)).dataobj)
    with caplog.at_level(logging.WARNING, logger="morphzoo.data"):
        cleaned = clean_label(raw, (0, 1, 2), source=str(path))
    assert set(np.unique(cleaned).tolist()) <= {0, 1, 2}
    assert np.array_equal(cleaned[raw == -2], np.zeros(1, raw.dtype))
    assert np.array_equal(cleaned[raw != -2], raw[raw != -2])
    assert (raw == -2).sum() == 1  # the input is not modified
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and name in messages[0] and "-2" in messages[0] and "1 voxel" in messages[0]


def test_clean_label_tensor_and_clean_input() -> None:
    t = torch.tensor([[0, 1, 5], [2, 5, 7]])
    out = clean_label(t, (0, 1, 2), source="x")
    assert out.tolist() == [[0, 1, 0], [2, 0, 0]] and t[0, 2] == 5
    a = np.array([0, 1, 2])
    assert clean_label(a, (0, 1, 2)) is a


def test_map_unexpected_labelsd_in_chain(hippo_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = ["moving_label", "fixed_label"]
    chain = Compose([LoadImaged(keys, image_only=True), MapUnexpectedLabelsd(keys, allowed=(0, 1, 2))])
    data = {k: str(hippo_dir / "label" / n) for k, n in zip(keys, sorted(DEFECTS))}
    with caplog.at_level(logging.WARNING, logger="morphzoo.data"):
        out = chain(data)
    for key in keys:
        assert set(torch.unique(out[key]).tolist()) == {0.0, 1.0, 2.0}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert all(name in text for name in DEFECTS)


def test_load_hippocampus_cleans(hippocampus_items: list[dict]) -> None:
    item = next(it for it in hippocampus_items if it["subject"] == "hippocampus_243")
    image, label = load_hippocampus(item)
    assert image.shape == label.shape == (64, 64, 64) and image.dtype == np.float32
    assert set(np.unique(label).tolist()) == {0, 1, 2}


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def _msd_folder(root: Path) -> Path:
    """A tiny MSD Task04-like folder: odd, varying sizes, a marker voxel, and a macOS '._' file."""
    rng = np.random.default_rng(0)
    for idx, shape in ((1, (35, 51, 33)), (2, (70, 41, 67))):
        img = rng.random(shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        centre = tuple(s // 2 for s in shape)
        lab[centre] = 2
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = (-10.0, 5.0, 2.5)
        _write(root / "imagesTr" / f"hippocampus_{idx:03d}.nii.gz", img, affine)
        _write(root / "labelsTr" / f"hippocampus_{idx:03d}.nii.gz", lab, affine)
    (root / "imagesTr" / "._hippocampus_001.nii.gz").write_bytes(b"junk")
    return root


def test_msd_layout_pad_crop(tmp_path: Path) -> None:
    src = _msd_folder(tmp_path / "Task04_Hippocampus")
    items = list_hippocampus(src)
    assert [it["subject"] for it in items] == ["hippocampus_001", "hippocampus_002"]
    assert {it["layout"] for it in items} == {"msd"}
    for item in items:
        image, label = load_hippocampus(item)
        assert image.shape == label.shape == (64, 64, 64)
        # the centre voxel stays (within one voxel for odd sizes) at the centre
        pos = np.argwhere(label == 2)
        assert len(pos) == 1 and all(abs(int(p) - 32) <= 1 for p in pos[0])
    # pad on one axis, crop on the others: centred
    a = np.arange(5)[:, None, None] * np.ones((5, 70, 66))
    out = pad_crop_center(a, (64, 64, 64))
    assert out.shape == (64, 64, 64) and out[:29].sum() == 0 and out[34:].sum() == 0


def test_convert_msd_keeps_world_positions(tmp_path: Path) -> None:
    src = _msd_folder(tmp_path / "Task04_Hippocampus")
    out = convert_msd_hippocampus(src, tmp_path / "hippocampus")
    assert [it["layout"] for it in out] == ["learn2reg", "learn2reg"]
    for raw, conv in zip(list_hippocampus(src), out):
        a, b = nib.load(str(raw["label"])), nib.load(str(conv["label"]))
        assert b.shape == (64, 64, 64) and nib.load(str(conv["image"])).get_data_dtype() == np.float32
        world = lambda img: nib.affines.apply_affine(
            img.affine, np.argwhere(np.asanyarray(img.dataobj) == 2)[0]
        )  # noqa: E731
        assert np.allclose(world(a), world(b))


def test_missing_label_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "img" / "hippocampus_001.nii.gz", np.zeros((4, 4, 4), np.float32))
    (tmp_path / "label").mkdir()
    with pytest.raises(FileNotFoundError, match="hippocampus_001.nii.gz"):
        list_hippocampus(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither the Learn2Reg"):
        list_hippocampus(tmp_path / "label")
