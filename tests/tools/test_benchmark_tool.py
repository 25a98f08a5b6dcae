"""``tools/benchmark.py`` pieces in-process: Learn2Reg export convention and names, the README
block, bundle loading through MONAI's ConfigParser, and method selection errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp
from scipy.ndimage import gaussian_filter, map_coordinates

from morphzoo.inference.bundles import bundle_config_files, list_registration_bundles, load_bundle_registrar
from tests.conftest import REPO, load_tool


@pytest.fixture(scope="module")
def bench():
    return load_tool("benchmark")


def test_learn2reg_names(bench) -> None:
    item = {"moving": "hippocampus/img/hippocampus_367.nii.gz", "fixed": "hippocampus/img/hippocampus_225.nii.gz",
            "moving_subject": "hippocampus_367", "fixed_subject": "hippocampus_225"}
    assert bench.learn2reg_name(item) == "disp_0225_0000_0367_0000.npz"  # fixed first, then moving
    assert bench.learn2reg_name({"moving": "hc18/training_set/609_2HC.png", "fixed": "x", "moving_subject": "609", "fixed_subject": "12"}) == "disp_0012_0000_0609_0000.npz"
    assert bench.learn2reg_name({"moving": "a/case_7.nii.gz", "fixed": "a/case_31.nii.gz"}) == "disp_0031_0000_0007_0000.npz"


@pytest.mark.parametrize("shape", [(20, 24, 16), (40, 36)])
def test_learn2reg_array_reproduces_warp_with_map_coordinates(bench, shape) -> None:
    """``map_coordinates(moving, identity + disp)`` (Learn2Reg's evaluation) is MONAI ``Warp(moving, ddf)``."""
    rng = np.random.default_rng(0)
    nd = len(shape)
    moving = gaussian_filter(rng.random(shape), 2).astype(np.float32)
    ddf = np.stack([gaussian_filter(rng.standard_normal(shape), 3) * 20 for _ in range(nd)]).astype(np.float32)
    assert np.abs(ddf).max() > 1.5  # a real deformation, several voxels in places

    disp = bench.learn2reg_array(ddf)
    assert disp.shape == (*shape, nd) and disp.dtype == np.float32 and disp.flags.c_contiguous

    identity = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    ours = map_coordinates(moving, identity + np.moveaxis(disp, -1, 0), order=1, mode="nearest")
    warped = Warp(mode="bilinear", padding_mode="border")(torch.from_numpy(moving)[None, None], torch.from_numpy(ddf)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, warped, atol=1e-4)


def test_readme_block_created_replaced_and_appended(bench, tmp_path: Path) -> None:
    info = {"date": "2000-01-01", "pairs": 2, "device": "cpu", "threads": 1, "wall_s": 3.0}
    readme = tmp_path / "README.md"
    bench.update_readme(readme, "hc18_reg2d", bench.readme_block("hc18_reg2d", "| a |\n", "cmd one", info))
    text = readme.read_text()
    assert text.count("<!-- results:hc18_reg2d:start -->") == 1 and "cmd one" in text and "| a |" in text

    readme.write_text("# Title\n\nintro\n\n" + text[text.index("<!-- results"):] + "\n## After\n\nkept\n")
    bench.update_readme(readme, "hc18_reg2d", bench.readme_block("hc18_reg2d", "| b |\n", "cmd two", info))
    bench.update_readme(readme, "hippocampus3d", bench.readme_block("hippocampus3d", "| c |\n", "cmd three", info))
    text = readme.read_text()
    assert "cmd one" not in text and "| a |" not in text and "cmd two" in text and "| b |" in text
    assert text.startswith("# Title\n\nintro\n") and "## After\n\nkept\n" in text
    assert text.index("## After") < text.index("<!-- results:hippocampus3d:start -->")  # new section appended
    assert text.count("<!-- results:hc18_reg2d:end -->") == 1 and text.count("<!-- results:hippocampus3d:end -->") == 1


def test_unknown_method_is_an_error() -> None:
    from morphzoo.inference.methods import build_methods

    with pytest.raises(SystemExit, match="unknown method 'nope'"):
        build_methods(["identity", "nope"], "hippocampus2d", 2, [0, 1, 2], torch.device("cpu"), 1, bundles_dir=REPO / "bundles")


def test_method_specs_with_stage_overrides() -> None:
    from morphzoo.inference.methods import parse_method_spec

    assert parse_method_spec("searchmorph") == ("searchmorph", None, {})
    assert parse_method_spec("searchmorph[prealign=none]") == ("searchmorph", None, {"prealign": "none"})
    assert parse_method_spec("voxelmorph[refine_steps=0;refine_learning_rate=0.5]") == (
        "voxelmorph", None, {"refine_steps": 0, "refine_learning_rate": 0.5})
    assert parse_method_spec("flaky=bench_plugins:fail") == ("flaky", "bench_plugins:fail", {})
    with pytest.raises(ValueError, match="key=value"):
        parse_method_spec("voxelmorph[refine_steps]")


def test_stage_ablation_rows_are_the_bundle_with_the_override() -> None:
    """``bundle[prealign=none]`` is a row of its own whose Registrar has the stage removed."""
    from morphzoo.inference.methods import build_methods

    methods, _ = build_methods(["voxelmorph[prealign=opt;refine_steps=3]", "voxelmorph[prealign=none;refine_steps=0]"],
                               "hc18_reg2d", 2, [0, 1], torch.device("cpu"), 1, bundles_dir=REPO / "bundles")
    with_stages, without = methods["voxelmorph[prealign=opt;refine_steps=3]"], methods["voxelmorph[prealign=none;refine_steps=0]"]
    assert with_stages.prealign is not None and with_stages.refine is not None and with_stages.refine.steps == 3
    assert without.prealign is None and without.refine is None


def test_bundle_overlay_rows_read_the_variant_config() -> None:
    """``bundle[config=FILE]`` reads a variant overlay after the task overlay (list-valued keys)."""
    from morphzoo.inference.methods import build_methods

    spec = "fetal_us_cascade_reg[config=variant_single_scale.json]"
    methods, _ = build_methods(["fetal_us_cascade_reg", spec], "hc18_reg2d", 2, [0, 1], torch.device("cpu"), 1,
                               bundles_dir=REPO / "bundles")
    single, cascade = methods[spec], methods["fetal_us_cascade_reg"]
    assert single.network.scales == [1] and len(single.network.stages) == 1 and cascade.network.scales == [4, 2, 1]
    assert single.checkpoint.endswith("model_single_scale.pt")
    with pytest.raises(SystemExit, match="no_such.json"):
        build_methods(["fetal_us_cascade_reg[config=no_such.json]"], "hc18_reg2d", 2, [0, 1], torch.device("cpu"), 1,
                      bundles_dir=REPO / "bundles")


# ---------------------------------------------------------------------------- bundles
def test_registration_bundles_listed() -> None:
    bundles = list_registration_bundles(REPO / "bundles")
    assert "voxelmorph" in bundles and bundles["voxelmorph"] == REPO / "bundles" / "voxelmorph"


@pytest.mark.parametrize("task,dims,size", [("hippocampus3d", 3, (64, 64, 64)), ("hc18_reg2d", 2, (160, 240))])
def test_load_bundle_registrar_with_task_overlay(tmp_path: Path, task: str, dims: int, size: tuple) -> None:
    from morphzoo.networks.nets import VoxelMorphBackbone

    net = VoxelMorphBackbone(spatial_dims=dims, variant="vm2")
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    reg = load_bundle_registrar(REPO / "bundles" / "voxelmorph", task=task, device="cpu", checkpoint=ckpt)
    assert reg.spatial_dims == dims and reg.spatial_size == size and reg.task == task and reg.bundle_name == "voxelmorph"
    assert reg.num_parameters == sum(p.numel() for p in net.parameters()) > 0
    assert reg.device == torch.device("cpu") and Path(reg.checkpoint) == ckpt
    for a, b in zip(reg.network.state_dict().values(), net.state_dict().values()):  # the weights were loaded
        assert torch.equal(a.cpu(), b)
    files = [p.name for p in bundle_config_files(REPO / "bundles" / "voxelmorph", task)]
    assert files == (["inference.json"] if task == "hippocampus3d" else ["inference.json", f"task_{task}.json"])


def test_load_bundle_registrar_errors(tmp_path: Path) -> None:
    vm = REPO / "bundles" / "voxelmorph"
    with pytest.raises(FileNotFoundError, match="has no task 'nope'"):
        load_bundle_registrar(vm, task="nope")
    with pytest.raises(FileNotFoundError, match="weights of bundle 'voxelmorph'"):
        load_bundle_registrar(vm, checkpoint=tmp_path / "missing.pt")
