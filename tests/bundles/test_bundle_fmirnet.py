"""End-to-end checks of the fmirnet bundle through MONAI's bundle runner, on real data: the paper's
FMIRNet-1/-2 ablations are config switches with their own shipped weights, runnable through the
same command line, and the bundle's configs carry the paper's loss (MSE + β(1 − SSIM) + α·summed
diffusion) with its ultrasound and CT weights."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "fmirnet"
CFG = BUNDLE / "configs"
ABLATIONS = {"variant_fmirnet1.json": (1, "model_fmirnet1.pt"), "variant_fmirnet2.json": (2, "model_fmirnet2.pt")}


def _parser(*files: str):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CFG / f) for f in files])
    p["bundle_root"] = str(BUNDLE)
    return p


def test_ablation_files(bundle_checks):
    bundle_checks.assert_file_set("fmirnet", tuple(f"configs/{f}" for f in ABLATIONS) + tuple(f"models/{m}" for _, m in ABLATIONS.values()))


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_ablation_weights_load_into_the_network_their_switch_builds(variant):
    scales, model_file = ABLATIONS[variant]
    p = _parser("inference.json", variant)
    assert p["model_file"] == model_file and p["num_scales"] == scales
    net = p.get_parsed_content("network_def")
    assert net.num_scales == scales and len(net.scale_fields(torch.rand(1, 2, 160, 240))) == scales
    net.load_state_dict(torch.load(BUNDLE / "models" / model_file, weights_only=True), strict=True)


def test_the_paper_loss_and_weights_per_task():
    """Ultrasound (default task): α = 1e-5, β = 1; hippocampus3d uses the paper's CT setting α = 1e-7,
    β = 0.1. Both α multiply a diffusion penalty summed over voxels (``diffusion_sum``): averaged,
    such weights would switch regularisation off."""
    from morphzoo.losses import PerSampleSum, WeightedSumLoss

    for files, alpha, beta in ((["train.json"], 1e-5, 1.0), (["train.json", "task_hippocampus3d.json"], 1e-7, 0.1)):
        p = _parser(*files)
        loss = p.get_parsed_content("loss")
        assert isinstance(loss.regularizer, PerSampleSum) and loss.reg_weight == pytest.approx(alpha)
        assert isinstance(loss.image_loss, WeightedSumLoss) and loss.image_loss.weights == [1.0, beta]


def test_fmirnet1_through_the_command_line(tmp_path, data_dir, bundle_runner):
    hc = data_dir / "hc18" / "training_set"
    out = tmp_path / "out"
    bundle_runner("fmirnet", ["inference.json", "variant_fmirnet1.json"], moving=hc / "001_HC.png", fixed=hc / "002_HC.png",
                  output_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["time_ms"] > 0 and (out / "warped.nii.gz").is_file()
