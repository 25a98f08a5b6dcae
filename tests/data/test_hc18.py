"""HC18 readers on the real training set: CSV, subjects, sizes from the PNG headers, head masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from morphzoo.data import hc18_subject, load_hc18_mask, read_hc18_csv
from tests.conftest import REPO


def test_read_csv(hc18_dir: Path) -> None:
    table = read_hc18_csv(hc18_dir / "training_set_pixel_size_and_HC.csv")
    assert len(table) == 800
    assert table["000_HC.png"] == {"pixel_size_mm": 0.069135804, "hc_mm": 44.3}


def test_read_csv_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,pixel size(mm),head circumference (mm)\n000_HC.png,abc,44\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2"):
        read_hc18_csv(bad)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_hc18_csv(tmp_path / "missing.csv")


def test_list_hc18(hc18_items: list[dict]) -> None:
    assert len(hc18_items) == 800
    by_name = {it["image"].name: it for it in hc18_items}
    assert by_name["010_HC.png"]["subject"] == by_name["010_2HC.png"]["subject"] == "010"
    assert {by_name[n]["subject"] for n in ("014_HC.png", "014_2HC.png", "014_3HC.png")} == {"014"}
    assert len({it["subject"] for it in hc18_items}) == 665
    assert all(it["label"].name == it["image"].name.replace(".png", "_Annotation.png") for it in hc18_items)
    # sizes come from the files: not all are 800x540
    odd = [it for it in hc18_items if it["size_hw"] != (540, 800)]
    assert odd
    for it in odd[:3] + hc18_items[:1]:
        assert np.asarray(Image.open(it["image"])).shape[:2] == it["size_hw"]


def test_subject_name() -> None:
    assert hc18_subject("010_2HC.png") == hc18_subject("010_HC_Annotation.png") == "010"
    with pytest.raises(ValueError, match="no '_'"):
        hc18_subject("010HC.png")


def test_load_mask_real(hc18_items: list[dict]) -> None:
    for it in (hc18_items[0], next(i for i in hc18_items if i["size_hw"] != (540, 800))):
        mask = load_hc18_mask(it["label"])
        assert mask.dtype == np.uint8 and mask.shape == it["size_hw"]
        assert set(np.unique(mask).tolist()) == {0, 1}
        assert 0 < mask.sum() < mask.size
        assert np.array_equal(mask, load_hc18_mask(it["label"], fill=False))  # shared masks are filled


def test_load_mask_single_channel_and_outline(tmp_path: Path) -> None:
    grey = Image.new("L", (40, 30), 0)
    ImageDraw.Draw(grey).ellipse((5, 5, 30, 25), fill=255)
    grey.save(tmp_path / "filled.png")
    filled = load_hc18_mask(tmp_path / "filled.png")
    assert filled.shape == (30, 40) and filled.sum() > 300

    outline = Image.new("RGB", (40, 30), (0, 0, 0))
    ImageDraw.Draw(outline).ellipse((5, 5, 30, 25), outline=(255, 255, 255), width=1)
    outline.save(tmp_path / "outline.png")
    assert load_hc18_mask(tmp_path / "outline.png").sum() == filled.sum()
    assert load_hc18_mask(tmp_path / "outline.png", fill=False).sum() < filled.sum() / 3


def test_shipped_offset_is_the_training_calibration(data_dir):
    from morphzoo.data.hc18 import hc18_contour_offset

    cfg = json.loads((REPO / "bundles" / "fetal_us_seg" / "configs" / "inference.json").read_text())
    # the first 40 training masks (the shipped value is the median over all 640)
    off = hc18_contour_offset(REPO / "datalists" / "hc18_seg.json", "training", cfg["hc_fit"], root=data_dir, limit=40)
    assert off == pytest.approx(cfg["hc_offset_px"], abs=0.05)


def test_grid_floor_is_far_below_the_anchor_and_grows_on_coarser_grids(data_dir):
    from morphzoo.data.hc18 import hc18_grid_floor

    datalist = REPO / "datalists" / "hc18_seg.json"
    fine = hc18_grid_floor(datalist, "validation", (160, 240), root=data_dir, limit=8)
    coarse = hc18_grid_floor(datalist, "validation", (40, 60), root=data_dir, limit=8)
    assert fine.shape == coarse.shape == (8,)
    # a perfect network at the shipped 160x240 reads the reference HC within a fraction of a mm
    # (0.06 mm on all 82 validation images), far below the 2.0 mm anchor
    assert np.all(np.isfinite(fine)) and fine.mean() < 0.2
    assert coarse.mean() > 2 * fine.mean()


def test_grid_floor_rejects_a_bad_grid(data_dir):
    from morphzoo.data.hc18 import hc18_grid_floor

    with pytest.raises(ValueError, match=r"spatial_size must be two positive sizes.*\(160,\)"):
        hc18_grid_floor(REPO / "datalists" / "hc18_seg.json", spatial_size=(160,), root=data_dir)


def test_label_on_grid_is_the_training_label_of_fetal_us_seg(data_dir):
    """The grid floor's label path is train.json's: the same (1, 160, 240) label for a real image."""
    import torch
    from monai.bundle import ConfigParser

    from morphzoo.data.hc18 import label_on_grid

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "fetal_us_seg" / "configs" / "train.json"))
    parser["dataset_dir"] = str(data_dir)
    item = json.loads((REPO / "datalists" / "hc18_seg.json").read_text())["validation"][0]
    trained = torch.as_tensor(parser.get_parsed_content("preprocessing")(dict(item))["label"])
    ours = label_on_grid(torch.from_numpy(load_hc18_mask(data_dir / item["label"]))[None].float(), (160, 240))
    assert trained.shape == ours.shape == (1, 160, 240)
    torch.testing.assert_close(trained.float(), torch.as_tensor(ours).float())
