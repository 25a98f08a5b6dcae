"""tools/render_configs.py: the committed bundle configs are renders of one shared source plus each
bundle's short method file."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_tool


def _tool():
    return load_tool("render_configs")


def test_committed_configs_equal_their_render() -> None:
    bad = _tool().differences()
    assert not bad, "configs differ from their render (run `python tools/render_configs.py`): " + ", ".join(
        str(p.relative_to(REPO)) for p in bad
    )


def test_every_bundle_has_a_method_file() -> None:
    for bundle in sorted((REPO / "bundles").iterdir()):
        if bundle.is_dir():
            assert (bundle / "method.json").is_file(), f"{bundle.name}: no method.json (see tools/render_configs.py)"


def test_a_registration_bundle_is_a_short_method_file() -> None:
    """What is unique to a registration bundle stays small next to the configs rendered from it."""
    tool = _tool()
    for bundle, files in tool.rendered_bundles().items():
        method = json.loads((bundle / "method.json").read_text())
        if method["kind"] != "registration":
            continue
        unique = len((bundle / "method.json").read_text().splitlines())
        rendered = sum(len(t.splitlines()) for t in files.values())
        assert unique <= 80 and unique < rendered / 8, f"{bundle.name}: {unique} method lines for {rendered} rendered lines"


def test_merge_semantics() -> None:
    merge = _tool().merge
    base = {"a": 1, "d": {"x": 1, "y": [1, 2]}, "l": [1]}
    out = merge(base, {"d": {"y": [3], "z": 2}, "l": [2, 3], "n": None})
    assert out == {"a": 1, "d": {"x": 1, "y": [3], "z": 2}, "l": [2, 3], "n": None}
    assert base == {"a": 1, "d": {"x": 1, "y": [1, 2]}, "l": [1]}  # inputs untouched


def test_task_overlays_carry_the_shared_task_facts() -> None:
    """A task overlay is the task's shared facts plus the method's keys for it; MONAI merges it on top."""
    from monai.bundle import ConfigParser

    facts = json.loads((REPO / "tools" / "bundle_templates" / "tasks" / "hc18_reg2d.json").read_text())
    overlay = REPO / "bundles" / "voxelmorph" / "configs" / "task_hc18_reg2d.json"
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / "voxelmorph" / "configs" / "train.json"), str(overlay)])
    for key in ("task", "spatial_dims", "labels"):
        assert parser[key] == facts[key]
    assert parser["image_loss"] == "mse" and parser["model_file"] == "model_hc18_reg2d.pt"


def test_check_mode_reports_a_hand_edit(tmp_path, monkeypatch) -> None:
    import shutil

    tool = _tool()
    shutil.copytree(REPO / "bundles" / "voxelmorph", tmp_path / "voxelmorph", ignore=shutil.ignore_patterns("models", "runs", "docs"))
    assert tool.differences(tmp_path) == []
    cfg = tmp_path / "voxelmorph" / "configs" / "inference.json"
    cfg.write_text(cfg.read_text().replace('"refine_steps": 0', '"refine_steps": 7', 1) if '"refine_steps": 0' in cfg.read_text() else cfg.read_text() + " ")
    assert tool.differences(tmp_path) == [cfg]


def _method_bundle(tmp_path, default_keys: dict) -> "Path":
    bundle = tmp_path / "toy"
    bundle.mkdir()
    method = {
        "kind": "registration",
        "default_task": "hc18_reg2d",
        "network_def": {"_target_": "monai.networks.nets.VoxelMorphUNet"},
        "tasks": {"hc18_reg2d": default_keys, "hippocampus3d": {"model_file": "model_hippocampus3d.pt"}},
    }
    (bundle / "method.json").write_text(json.dumps(method))
    return bundle


def test_overlays_put_back_what_the_default_task_sets(tmp_path) -> None:
    """A key set for the default task only (here the affine stage and a training label weight) is
    reset to the template's value in every other task's overlay instead of being inherited."""
    tool = _tool()
    files = tool.render_bundle(_method_bundle(tmp_path, {"prealign": "net", "train": {"label_weight": 1.0}}))
    inference = json.loads(files["configs/inference.json"])
    train = json.loads(files["configs/train.json"])
    overlay = json.loads(files["configs/task_hippocampus3d.json"])
    assert inference["prealign"] == "net" and train["label_weight"] == 1.0
    assert overlay["prealign"] == "none" and overlay["label_weight"] == 0.0
    assert overlay["model_file"] == "model_hippocampus3d.pt"


def test_a_default_task_key_without_base_value_is_refused(tmp_path) -> None:
    with pytest.raises(SystemExit, match="no_such_key"):
        _tool().render_bundle(_method_bundle(tmp_path, {"no_such_key": 1}))


def test_bundle_specific_overlays_are_written_as_given(tmp_path) -> None:
    """``method["overlays"]`` (e.g. the cascade's training stages) become configs/<file> unchanged,
    with ``@@bundle_name`` substituted."""
    bundle = _method_bundle(tmp_path, {})
    method = json.loads((bundle / "method.json").read_text())
    method["overlays"] = {"train_stage1.json": {"num_stages": 1, "frozen_prefixes": ["stages.0."], "name": "@@bundle_name"}}
    (bundle / "method.json").write_text(json.dumps(method))
    files = _tool().render_bundle(bundle)
    assert json.loads(files["configs/train_stage1.json"]) == {"num_stages": 1, "frozen_prefixes": ["stages.0."], "name": "toy"}
    assert json.loads(files["configs/train.json"])["frozen_prefixes"] == []  # the base: nothing frozen
