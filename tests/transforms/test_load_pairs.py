"""Subject loading (LoadSubjectd) on the real data sets, and pair building (pairs.py)."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from morphzoo.transforms.io import InputError
from morphzoo.transforms.load import LoadSubjectd
from morphzoo.transforms.pairs import PairDataset, pair_indices


# ----------------------------------------------------------------------------- LoadSubjectd
def test_load_hippocampus_003_maps_stray_label_with_warning(hippo_dir, caplog):
    lab_path = hippo_dir / "label" / "hippocampus_003.nii.gz"
    raw = np.asarray(nib.load(str(lab_path)).dataobj)
    n_bad = int((raw == -2).sum())
    assert n_bad > 0, "hippocampus_003 is documented to hold the stray value -2"
    item = {"image": "hippocampus/img/hippocampus_003.nii.gz", "label": "hippocampus/label/hippocampus_003.nii.gz"}
    tr = LoadSubjectd(allowed_labels=[0, 1, 2], label_policy="map")
    with caplog.at_level(logging.WARNING, logger="morphzoo.transforms.load"):
        out = tr(item)
    assert out["image"].shape == (1, 64, 64, 64) and out["image"].dtype == torch.float32
    assert out["label"].shape == (1, 64, 64, 64)
    lab = out["label"][0].numpy()
    assert lab.min() >= 0
    assert set(np.unique(lab).tolist()) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(lab, np.where(raw == -2, 0, raw))
    torch.testing.assert_close(out["spacing"], torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "mapping a stray label value must be reported"
    msg = warnings[0].getMessage()
    assert str(lab_path) in msg and "-2" in msg and str(n_bad) in msg
    assert item["image"] == "hippocampus/img/hippocampus_003.nii.gz"  # the input item is not modified


def test_load_hippocampus_003_error_policy(hippo_dir):
    item = {
        "image": str(hippo_dir / "img" / "hippocampus_003.nii.gz"),
        "label": str(hippo_dir / "label" / "hippocampus_003.nii.gz"),
    }
    with pytest.raises(InputError) as ei:
        LoadSubjectd(allowed_labels=[0, 1, 2], label_policy="error")(item)
    assert "hippocampus_003.nii.gz" in str(ei.value) and "-2" in str(ei.value)
    with pytest.raises(ValueError):
        LoadSubjectd(label_policy="ignore")


def test_load_clean_subject_no_warning(hippo_dir, caplog):
    item = {"image": "hippocampus/img/hippocampus_004.nii.gz", "label": "hippocampus/label/hippocampus_004.nii.gz"}
    with caplog.at_level(logging.WARNING, logger="morphzoo.transforms.load"):
        out = LoadSubjectd(allowed_labels=[0, 1, 2], root=hippo_dir.parent)(item)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    raw = np.asarray(nib.load(str(hippo_dir / "label" / "hippocampus_004.nii.gz")).dataobj)
    np.testing.assert_array_equal(out["label"][0].numpy(), raw)


def test_load_hippocampus2d_slice(hippo_dir):
    item = {
        "image": "hippocampus/img/hippocampus_004.nii.gz",
        "label": "hippocampus/label/hippocampus_004.nii.gz",
        "slice_axis": 0,
        "slice_index": 32,
    }
    out = LoadSubjectd(allowed_labels=[0, 1, 2])(item)
    assert out["image"].shape == (1, 64, 64)
    assert out["label"].shape == (1, 64, 64)
    vol = np.asarray(nib.load(str(hippo_dir / "img" / "hippocampus_004.nii.gz")).dataobj)
    np.testing.assert_array_equal(out["image"][0].numpy(), vol[32])
    assert out["spacing"].shape == (2,)


def test_load_without_label_drops_key(hippo_dir):
    out = LoadSubjectd()({"image": "hippocampus/img/hippocampus_004.nii.gz", "label": ""})
    assert "label" not in out and out["image"].shape == (1, 64, 64, 64)


def test_load_hc18_png_with_pixel_size(hc18_images):
    item = {
        "image": "hc18/training_set/000_HC.png",
        "label": "hc18/training_set/000_HC_Annotation.png",
        "pixel_size_mm": 0.069135804,
    }
    out = LoadSubjectd(allowed_labels=[0, 1])(item)
    with Image.open(hc18_images / "000_HC.png") as im:
        h, w = np.asarray(im).shape[:2]
    assert out["image"].shape == (1, h, w)
    assert out["label"].shape == (1, h, w)
    torch.testing.assert_close(out["spacing"], torch.tensor([0.069135804] * 2, dtype=torch.float64))
    assert set(out["label"].unique().tolist()) == {0.0, 1.0}
    # a filled head: a sizeable, not total, part of the image
    frac = float(out["label"].mean())
    assert 0.05 < frac < 0.9


def test_load_label_shape_mismatch(tmp_path, save_nifti):
    save_nifti(tmp_path / "img.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8))
    save_nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 6), np.int16))
    with pytest.raises(InputError, match="lab.nii.gz"):
        LoadSubjectd(root=tmp_path)({"image": "img.nii.gz", "label": "lab.nii.gz"})


# ----------------------------------------------------------------------------- pairs
@pytest.mark.parametrize("n", [2, 3, 5])
def test_pair_indices_counts(n):
    allp = pair_indices(n)
    assert len(allp) == n * (n - 1) == len(set(allp))
    assert all(i != j and 0 <= i < n and 0 <= j < n for i, j in allp)
    atlas = pair_indices(n, "atlas", atlas_index=n - 1)
    assert len(atlas) == n - 1
    assert all(j == n - 1 and i != n - 1 for i, j in atlas)


def test_pair_indices_errors():
    with pytest.raises(ValueError):
        pair_indices(1)
    with pytest.raises(ValueError):
        pair_indices(3, "atlas", atlas_index=3)
    with pytest.raises(ValueError):
        pair_indices(3, "atlas", atlas_index=-1)
    with pytest.raises(ValueError):
        pair_indices(3, "random")
    with pytest.raises(ValueError):
        PairDataset([{}, {}], mode="list", pairs=[])


def test_pair_dataset_items():
    subjects = [
        {"image": torch.full((1, 4, 4), float(k)), "label": torch.full((1, 4, 4), float(k % 2)), "spacing": torch.tensor([1.0, 2.0])}
        for k in range(3)
    ]
    ds = PairDataset(subjects, mode="atlas", atlas_index=1)
    assert len(ds) == 2
    it = ds[1]  # (2, 1)
    assert float(it["moving"].mean()) == 2.0 and float(it["fixed"].mean()) == 1.0
    assert float(it["moving_label"].mean()) == 0.0 and float(it["fixed_label"].mean()) == 1.0
    torch.testing.assert_close(it["fixed_spacing"], torch.tensor([1.0, 2.0]))
    ds2 = PairDataset([{"image": torch.zeros(1, 2, 2)}, {"image": torch.ones(1, 2, 2), "label": torch.ones(1, 2, 2)}], mode="list", pairs=[(1, 0)])
    it2 = ds2[0]
    assert "moving_label" not in it2 and "fixed_label" not in it2  # only when both have labels
    assert float(it2["moving"].mean()) == 1.0


def test_from_pair_items_dedups_files():
    items = [
        {"moving": "a.nii.gz", "fixed": "b.nii.gz", "moving_label": "la.nii.gz", "fixed_label": "lb.nii.gz"},
        {"moving": "b.nii.gz", "fixed": "a.nii.gz", "moving_label": "lb.nii.gz", "fixed_label": "la.nii.gz"},
        {"moving": "c.nii.gz", "fixed": "a.nii.gz", "moving_label": "lc.nii.gz", "fixed_label": "la.nii.gz"},
        {"moving": "a.nii.gz", "fixed": "b.nii.gz"},  # same files without labels: different subjects
    ]
    subjects, pairs = PairDataset.from_pair_items(items)
    assert subjects[:3] == [
        {"image": "a.nii.gz", "label": "la.nii.gz"},
        {"image": "b.nii.gz", "label": "lb.nii.gz"},
        {"image": "c.nii.gz", "label": "lc.nii.gz"},
    ]
    assert len(subjects) == 5
    assert pairs[:3] == [(0, 1), (1, 0), (2, 0)]
    assert subjects[pairs[3][0]] == {"image": "a.nii.gz"} and subjects[pairs[3][1]] == {"image": "b.nii.gz"}
    # slices of the same volume are different subjects; pixel sizes follow their role
    sl = [
        {"moving": "v.nii.gz", "fixed": "v.nii.gz", "slice_axis": 0, "slice_index": 3},
        {"moving": "v.nii.gz", "fixed": "w.nii.gz", "slice_axis": 0, "slice_index": 4},
        {"moving": "p.png", "fixed": "q.png", "moving_pixel_size_mm": 0.1, "fixed_pixel_size_mm": 0.2},
    ]
    subj, prs = PairDataset.from_pair_items(sl)
    assert prs[0] == (0, 0)
    assert prs[1][0] != 0 and subj[prs[1][0]]["slice_index"] == 4
    assert subj[prs[2][0]]["pixel_size_mm"] == 0.1 and subj[prs[2][1]]["pixel_size_mm"] == 0.2
    ds = PairDataset([{"image": torch.zeros(1)}] * len(subj), mode="list", pairs=prs)
    assert len(ds) == 3
