"""Benchmark datalists (committed == fresh build), user-folder datalists, loading and path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from morphzoo.data import (
    TASKS,
    atlas_pairs,
    build_datalist,
    build_folder_datalist,
    fixed_test_pairs,
    load_datalist,
    resolve_paths,
    save_datalist,
    split_subjects,
    validation_subject_pairs,
)
from morphzoo.paths import DATA_ENV, data_root, datalist_path

REG_TASKS = ("hippocampus3d", "hippocampus2d", "hc18_reg2d")


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict]:
    return {task: build_datalist(task) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_committed_datalist_is_up_to_date(task: str, fresh: dict[str, dict]) -> None:
    path = datalist_path(task)
    assert path.is_file(), f"{path} missing: run `python tools/prepare_data.py`"
    assert json.loads(path.read_text()) == fresh[task], f"{path} is stale: run `python tools/prepare_data.py`"
    assert load_datalist(task) == fresh[task]


def _all_paths(datalist: dict) -> list[str]:
    keys = ("image", "label", "moving", "fixed", "moving_label", "fixed_label")
    out = []
    for value in datalist.values():
        for item in value if isinstance(value, list) else [value] if isinstance(value, dict) else []:
            out += [item[k] for k in keys if k in item]
    return out


@pytest.mark.parametrize("task", TASKS)
def test_paths_relative_and_existing(task: str, fresh: dict[str, dict]) -> None:
    paths = _all_paths(fresh[task])
    assert paths and all(not Path(p).is_absolute() and "\\" not in p for p in paths)
    assert all((data_root() / p).is_file() for p in set(paths))


@pytest.mark.parametrize("task", TASKS)
def test_subjects_never_in_two_splits(task: str, fresh: dict[str, dict]) -> None:
    dl = fresh[task]
    subjects = {}
    image_tests = task in ("hc18_seg", "hippocampus_fewlabel")
    for split in ("training", "validation") + (("test",) if image_tests else ()):
        subjects[split] = {it["subject"] for it in dl[split]}
    if not image_tests:
        subjects["test"] = {s for p in dl["test"] for s in (p["moving_subject"], p["fixed_subject"])}
    names = list(subjects)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not subjects[a] & subjects[b], (task, a, b)


def test_split_sizes_per_task(fresh: dict[str, dict]) -> None:
    for task in ("hippocampus3d", "hippocampus2d"):
        dl = fresh[task]
        assert (len(dl["training"]), len(dl["validation"])) == (176, 22)
        assert len({s for p in dl["test"] for s in (p["moving_subject"], p["fixed_subject"])}) == 22
    seg = fresh["hc18_seg"]
    assert [len({it["subject"] for it in seg[k]}) for k in ("training", "validation", "test")] == [532, 67, 66]
    assert sum(len(seg[k]) for k in ("training", "validation", "test")) == 800
    # 010_HC and 010_2HC travel together
    for split in ("training", "validation", "test"):
        names = {Path(it["image"]).name for it in seg[split]}
        assert ("010_HC.png" in names) == ("010_2HC.png" in names)
    assert fresh["hc18_reg2d"]["training"] == seg["training"]
    few, vol = fresh["hippocampus_fewlabel"], fresh["hippocampus3d"]
    assert [len(few[k]) for k in ("training", "validation", "test")] == [176, 22, 22]
    assert {it["subject"] for it in few["test"]} == {s for p in vol["test"] for s in (p["moving_subject"], p["fixed_subject"])}


def test_fewlabel_only_the_middle_slice_is_labelled(fresh: dict[str, dict]) -> None:
    """Training volumes name their one readable slice; validation/test volumes are scored whole."""
    few = fresh["hippocampus_fewlabel"]
    assert all(it["labelled_axis"] == 0 and it["labelled_slice"] == 32 for it in few["training"])
    assert not any("labelled_slice" in it for it in few["validation"] + few["test"])
    assert [it["subject"] for it in few["training"]] == [it["subject"] for it in fresh["hippocampus3d"]["training"]]


@pytest.mark.parametrize("task", REG_TASKS)
def test_fixed_pairs(task: str, fresh: dict[str, dict]) -> None:
    dl = fresh[task]
    keys = [(p["moving_subject"], p["fixed_subject"]) for p in dl["test"]]
    assert len(dl["test"]) == 100 and len(set(keys)) == 100
    assert all(m != f for m, f in keys)
    val_subjects = {it["subject"] for it in dl["validation"]}
    assert len(dl["validation_pairs"]) == 20
    assert all({p["moving_subject"], p["fixed_subject"]} <= val_subjects for p in dl["validation_pairs"])
    assert {p["fixed_subject"] for p in dl["atlas_test_pairs"]} == {dl["atlas"]["subject"]}
    atlas_moving = {p["moving_subject"] for p in dl["atlas_test_pairs"]}
    assert len(atlas_moving) == len(dl["atlas_test_pairs"]) == (66 if task == "hc18_reg2d" else 22)
    assert atlas_moving >= {s for k in keys for s in k}
    assert not atlas_moving & {it["subject"] for it in dl["training"] + dl["validation"]}
    assert dl["atlas"]["subject"] == min(it["subject"] for it in dl["training"])
    if task == "hc18_reg2d":
        first: dict[str, str] = {}
        for it in sorted(fresh["hc18_seg"]["test"], key=lambda i: i["image"]):
            first.setdefault(it["subject"], it["image"])
        for p in dl["test"]:
            assert p["moving"] == first[p["moving_subject"]] and p["fixed"] == first[p["fixed_subject"]]
            assert p["fixed_pixel_size_mm"] > 0 and p["moving_hc_mm"] > 0 and len(p["fixed_size_hw"]) == 2
    if task == "hippocampus2d":
        assert all(it["slice_axis"] == 0 and it["slice_index"] == 32 for it in dl["training"] + dl["test"])


@pytest.mark.parametrize("task", REG_TASKS)
def test_validation_subject_pairs_are_every_ordered_validation_pair(task: str, fresh: dict[str, dict]) -> None:
    dl = fresh[task]
    pairs = validation_subject_pairs(dl)
    val_subjects = sorted({it["subject"] for it in dl["validation"]})
    keys = [(p["moving_subject"], p["fixed_subject"]) for p in pairs]
    assert len(keys) == len(set(keys)) == len(val_subjects) * (len(val_subjects) - 1)
    assert all(m != f and m in val_subjects and f in val_subjects for m, f in keys)
    # the same items as the committed validation pairs: every pair of those is in the set, key for key
    by_key = dict(zip(keys, pairs))
    for p in dl["validation_pairs"]:
        assert by_key[(p["moving_subject"], p["fixed_subject"])] == p
    assert validation_subject_pairs(dl) == pairs  # a fixed order
    assert validation_subject_pairs(dl, seed=1) != pairs and sorted(map(str, validation_subject_pairs(dl, seed=1))) == sorted(map(str, pairs))
    with pytest.raises(ValueError, match="no validation subjects"):
        validation_subject_pairs({"task": task, "validation": [], "validation_pairs": []})


@pytest.mark.parametrize("task", REG_TASKS)
def test_atlas_pairs(task: str, fresh: dict[str, dict]) -> None:
    """``atlas_pairs`` of the validation split: each validation subject's first image onto the
    atlas, keyed like ``atlas_test_pairs`` (which build_datalist makes with the same function)."""
    dl = fresh[task]
    val = atlas_pairs(dl["validation"], dl["atlas"])
    subjects = sorted({it["subject"] for it in dl["validation"]})
    assert [p["moving_subject"] for p in val] == subjects
    assert {p["fixed"] for p in val} == {dl["atlas"]["image"]} and {p["fixed_label"] for p in val} == {dl["atlas"]["label"]}
    first = {}
    for it in dl["validation"]:
        first.setdefault(it["subject"], it)
    assert all(p["moving"] == first[p["moving_subject"]]["image"] for p in val)
    assert all(set(p) == set(dl["atlas_test_pairs"][0]) for p in val)
    if task == "hc18_reg2d":
        assert all(p["moving_pixel_size_mm"] == first[p["moving_subject"]]["pixel_size_mm"] for p in val)
    # the atlas itself is never paired with itself
    assert atlas_pairs(dl["training"][:3], dl["atlas"])[0]["moving_subject"] != dl["atlas"]["subject"]


def test_fixed_pairs_match_split_rule(fresh: dict[str, dict], hippocampus_items: list[dict]) -> None:
    test_ids = split_subjects([it["subject"] for it in hippocampus_items])["test"]
    pairs = fixed_test_pairs(test_ids)
    assert [(p["moving_subject"], p["fixed_subject"]) for p in fresh["hippocampus3d"]["test"]] == pairs


def test_resolve_paths(fresh: dict[str, dict]) -> None:
    items = resolve_paths(fresh["hippocampus3d"]["test"][:3])
    assert all(
        Path(it[k]).is_absolute() and Path(it[k]).is_file()
        for it in items
        for k in ("moving", "fixed", "moving_label", "fixed_label")
    )
    assert items[0]["moving_subject"] == fresh["hippocampus3d"]["test"][0]["moving_subject"]
    assert not Path(fresh["hippocampus3d"]["test"][0]["moving"]).is_absolute()  # input untouched


def test_missing_data_root_fails_helpfully(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: dict[str, dict]
) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    for call in (lambda: build_datalist("hippocampus3d"), lambda: resolve_paths(fresh["hc18_seg"]["test"][:1])):
        with pytest.raises(FileNotFoundError) as err:
            call()
        msg = str(err.value)
        assert "nowhere" in msg and DATA_ENV in msg and "prepare_data.py --download" in msg
    # absolute paths need no data root
    assert resolve_paths([{"image": "/abs/x.nii.gz"}]) == [{"image": "/abs/x.nii.gz"}]


def test_load_datalist_by_path_and_errors(tmp_path: Path) -> None:
    path = save_datalist({"task": "x", "training": [{"image": "a.nii.gz"}]}, tmp_path / "sub" / "x.json")
    assert load_datalist(str(path)) == {"task": "x", "training": [{"image": "a.nii.gz"}]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="prepare_data.py --tasks nosuchtask"):
        load_datalist("nosuchtask")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        load_datalist(tmp_path / "bad.json")


def test_folder_datalist(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(3):
        nib.save(
            nib.Nifti1Image(np.full((5, 6, 7), i, np.float32), np.eye(4)), str(tmp_path / "img" / f"case{i}.nii.gz")
        )
        nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.uint8), np.eye(4)), str(tmp_path / "lab" / f"case{i}.nii.gz"))
    (tmp_path / "img" / "notes.txt").write_text("ignored")

    dl = build_folder_datalist(tmp_path / "img", tmp_path / "lab")
    assert len(dl["training"]) == 3 and len(dl["test"]) == 6
    assert {(p["moving_subject"], p["fixed_subject"]) for p in dl["test"]} == {
        (f"case{a}", f"case{b}") for a in range(3) for b in range(3) if a != b
    }
    assert all(Path(p["moving_label"]).is_file() and Path(p["fixed"]).is_absolute() for p in dl["test"])

    atlas = build_folder_datalist(tmp_path / "img", tmp_path / "lab", mode="atlas", atlas="case1.nii.gz")
    assert [(p["moving_subject"], p["fixed_subject"]) for p in atlas["test"]] == [
        ("case0", "case1"),
        ("case2", "case1"),
    ]
    assert atlas["atlas"]["label"].endswith("lab/case1.nii.gz")

    no_labels = build_folder_datalist(tmp_path / "img", mode="atlas", atlas=tmp_path / "img" / "case0.nii.gz")
    assert len(no_labels["test"]) == 2 and "moving_label" not in no_labels["test"][0]

    (tmp_path / "lab" / "case2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case2"):
        build_folder_datalist(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(ValueError, match="needs an atlas"):
        build_folder_datalist(tmp_path / "img", mode="atlas")


def test_folder_datalist_png(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 6)).save(tmp_path / name)
    dl = build_folder_datalist(tmp_path)
    assert [(p["moving_subject"], p["fixed_subject"]) for p in dl["test"]] == [("a", "b"), ("b", "a")]
