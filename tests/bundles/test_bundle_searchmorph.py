"""End-to-end checks of the searchmorph bundle through MONAI's bundle runner, on real data."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "searchmorph"
CFG = BUNDLE / "configs"
# overlay -> (weights, network grid, spatial dims, search radius)
TASKS = {None: ("model.pt", [80, 120], 2, 2), "task_hippocampus3d.json": ("model_hippocampus3d.pt", [32, 32, 32], 3, 3)}
ABLATIONS = ("full", "no_iteration", "no_pyramid", "no_context", "no_search")


def _configs(base: str, overlay: str | None) -> list[str]:
    return [base] + ([overlay] if overlay else [])


def test_ablation_and_variant_files(bundle_checks):
    bundle_checks.assert_file_set(
        "searchmorph",
        ("configs/variant_unsupervised.json", "models/model_unsupervised.pt") + tuple(f"models/model_ablation_{a}.pt" for a in ABLATIONS),
    )


def test_unsupervised_variant_is_the_paper_faithful_pipeline(tmp_path, data_dir, bundle_runner):
    """configs/variant_unsupervised.json: the unsupervised weights without pre-alignment (the paper's
    setting), runnable through the same command line."""
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CFG / "inference.json"), str(CFG / "variant_unsupervised.json")])
    assert p["prealign"] == "none" and p["model_file"] == "model_unsupervised.pt"
    hc = data_dir / "hc18" / "training_set"
    out = tmp_path / "out"
    bundle_runner("searchmorph", ["inference.json", "variant_unsupervised.json"], moving=hc / "001_HC.png", fixed=hc / "002_HC.png",
                  output_dir=out)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "time_prealign_ms" not in metrics and metrics["time_ms"] > 0


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_weights_match_their_switches(name):
    """Each shipped ablation file loads strictly into the network its switch builds."""
    from morphzoo.networks.nets import SearchMorph

    switches = {"full": {}, "no_iteration": {"iterations": 1}, "no_pyramid": {"num_levels": 1},
                "no_context": {"use_context": False}, "no_search": {"use_search": False}}[name]
    net = SearchMorph(2, radius=2, **switches)
    net.load_state_dict(torch.load(BUNDLE / "models" / f"model_ablation_{name}.pt", weights_only=True), strict=True)


@pytest.mark.parametrize("configs,extra", [
    (["train.json"], {}),
    (["train.json"], {"per_iteration_loss": True, "correlation": "all_pairs"}),
    (["train.json", "task_hippocampus3d.json"], {}),
])
def test_train_one_short_epoch_on_real_data(configs, extra, tmp_path, data_dir, bundle_runner, bundle_checks):
    out = tmp_path / "run"
    proc = bundle_runner("searchmorph", configs, epoch_length=2, max_epochs=1, max_train_subjects=4, num_val_pairs=2,
                         batch_size=2, num_threads=1, output_dir=out, ckpt_dir=tmp_path / "models", **extra)
    model_file = "model_hippocampus3d.pt" if "task_hippocampus3d.json" in configs else "model.pt"
    ckpt = bundle_checks.assert_short_training(proc, out, tmp_path / "models", model_file)
    assert any(k.startswith("update.") for k in ckpt["network"]), "no iterative update block in the checkpoint"


def test_per_iteration_switch_reaches_the_loss():
    """`per_iteration_loss` makes the network return every iteration and the loss weigh them gamma^k."""
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(CFG / "train.json"))
    p["bundle_root"] = str(BUNDLE)
    p["per_iteration_loss"] = True
    assert p.get_parsed_content("scale_weights") == pytest.approx([1.0, 0.8, 0.64, 0.512])
    net = p.get_parsed_content("network_def")
    out = net(torch.rand(1, 2, 16, 24))
    assert isinstance(out, list) and len(out) == 4
    p2 = ConfigParser()
    p2.read_config(str(CFG / "train.json"))
    p2["bundle_root"] = str(BUNDLE)
    assert p2.get_parsed_content("scale_weights") is None
    assert isinstance(p2.get_parsed_content("network_def")(torch.rand(1, 2, 16, 24)), torch.Tensor)


def test_evaluate_config_and_benchmark_discovery(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "eval"
    proc = bundle_runner("searchmorph", ["inference.json", "evaluate.json"], output_dir=out, num_pairs=2, num_figures=1)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"searchmorph", "identity"} and summary["searchmorph"]["pairs"] == 2
    assert "| searchmorph |" in proc.stdout
    from morphzoo.inference.bundles import list_registration_bundles, load_bundle_registrar

    assert "searchmorph" in list_registration_bundles(REPO / "bundles")
    reg = load_bundle_registrar(BUNDLE, task="hippocampus3d", device="cpu")
    assert reg.spatial_dims == 3 and reg.spatial_size == (32, 32, 32)


def test_multi_gpu_train_two_processes_gloo(tmp_path, data_dir, bundle_torchrun):
    """DDP through torchrun with 2 CPU processes (gloo)."""
    bundle_torchrun("searchmorph", ["train.json", "multi_gpu_train.json"], epoch_length=1, max_epochs=1, batch_size=1,
                    max_train_subjects=4, num_val_pairs=1, output_dir=tmp_path / "run", ckpt_dir=tmp_path / "models")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 1
    assert not any(k.startswith("module.") for k in ckpt["network"]), "saved the DDP wrapper, not the network"
