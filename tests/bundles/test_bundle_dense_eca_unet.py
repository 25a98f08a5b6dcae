"""End-to-end checks of the dense_eca_unet bundle through MONAI's bundle runner, on real data."""

from __future__ import annotations

import json

import pytest
import torch

from morphzoo.paths import datalist_path
from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "dense_eca_unet"
CFG = BUNDLE / "configs"
TASKS = {None: ("model.pt", [160, 240], "hc18_reg2d"), "task_hippocampus2d.json": ("model_hippocampus2d.pt", [64, 64], "hippocampus2d")}


def _configs(base: str, overlay: str | None) -> list[str]:
    return [base] + ([overlay] if overlay else [])


def test_atlas_pairing_and_switches_in_the_train_config():
    """Default: every training pair has the datalist's atlas as fixed image, validation pairs are
    validation subjects -> atlas; `pairing all` gives inter-subject pairs and the datalist's
    validation pairs; `use_eca`/`dense` reach the network."""
    from monai.bundle import ConfigParser

    def parsed(**overrides):
        p = ConfigParser()
        p.read_config([str(CFG / "train.json"), str(CFG / "task_hippocampus2d.json")])
        p["bundle_root"] = str(BUNDLE)
        p["max_train_subjects"] = 5
        for k, v in overrides.items():
            p[k] = v
        return p

    datalist = json.loads(datalist_path("hippocampus2d").read_text())
    atlas = datalist["atlas"]
    p = parsed()
    subjects = p.get_parsed_content("train_subjects")
    pairs = p.get_parsed_content("train#dataset").pairs
    assert {subjects[j]["image"] for _, j in pairs} == {atlas["image"]} and len(pairs) == 4
    val = p.get_parsed_content("val_pair_items")
    assert {v["fixed"] for v in val} == {atlas["image"]} and len(val) == 22
    assert {v["moving_subject"] for v in val} == {s["subject"] for s in datalist["validation"]}

    p = parsed(pairing="all")
    assert len(p.get_parsed_content("train#dataset").pairs) == 5 * 4
    assert p.get_parsed_content("val_pair_items") == datalist["validation_pairs"]

    n = {}
    for eca in (True, False):
        for dense in (True, False):
            net = parsed(use_eca=eca, dense=dense).get_parsed_content("network_def")
            assert net.use_eca == eca and net.dense == dense
            n[eca, dense] = sum(q.numel() for q in net.parameters())
    assert n[False, False] < n[True, False] < n[False, True] < n[True, True]


def test_evaluate_atlas_pair_set(tmp_path, data_dir, bundle_runner):
    """`--pair_set atlas_test_pairs`: test subjects registered onto the atlas, with identity."""
    out = tmp_path / "eval"
    proc = bundle_runner("dense_eca_unet", ["inference.json", "task_hippocampus2d.json", "evaluate.json"],
                         pair_set="atlas_test_pairs", output_dir=out, num_pairs=2, num_figures=0)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"dense_eca_unet", "identity"} and summary["dense_eca_unet"]["pairs"] == 2
    datalist = json.loads(datalist_path("hippocampus2d").read_text())
    import csv

    rows = list(csv.DictReader(open(out / "pairs.csv")))
    assert {r["fixed"] for r in rows} == {datalist["atlas"]["image"]}
    assert [r["moving"] for r in rows if r["method"] == "identity"] == [p["moving"] for p in datalist["atlas_test_pairs"][:2]]
    assert "| dense_eca_unet |" in proc.stdout


def test_benchmark_discovers_the_bundle_for_both_tasks():
    from morphzoo.inference.bundles import list_registration_bundles, load_bundle_registrar

    assert "dense_eca_unet" in list_registration_bundles(REPO / "bundles")
    for task, size in (("hc18_reg2d", (160, 240)), ("hippocampus2d", (64, 64))):
        reg = load_bundle_registrar(BUNDLE, task=task, device="cpu")
        assert reg.spatial_dims == 2 and reg.spatial_size == size and reg.num_parameters > 250_000


