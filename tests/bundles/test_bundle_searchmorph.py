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


def test_bundle_file_set(bundle_checks):
    bundle_checks.assert_file_set(
        "searchmorph",
        ("configs/task_hippocampus3d.json", "models/model_hippocampus3d.pt")
        + tuple(f"models/model_ablation_{a}.pt" for a in ABLATIONS),
    )


def test_verify_metadata(bundle_checks):
    bundle_checks.assert_metadata_ok("searchmorph")


@pytest.mark.parametrize("overlay", list(TASKS))
def test_verify_net_in_out(overlay, tmp_path, bundle_checks):
    _, shape, dims, _ = TASKS[overlay]
    bundle_checks.assert_net_in_out_ok("searchmorph", _configs("inference.json", overlay), tmp_path, shape, dims)


@pytest.mark.parametrize("overlay", list(TASKS))
def test_ckpt_export_torchscript_matches_network(overlay, tmp_path, bundle_checks):
    """The iterative network (loop over GRU steps, correlation lookups) exports to TorchScript whole."""
    model_file, shape, dims, radius = TASKS[overlay]
    scripted = bundle_checks.ckpt_export("searchmorph", _configs("inference.json", overlay), model_file, tmp_path / "model.ts")
    from morphzoo.networks.nets import SearchMorph

    net = SearchMorph(dims, radius=radius)
    net.load_state_dict(torch.load(BUNDLE / "models" / model_file, weights_only=True))
    net.eval()
    x = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)
        assert net(x).abs().max() > 1e-2, "shipped weights look untrained (zero field)"


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


def test_register_own_png_pair_and_3d_pair(tmp_path, data_dir, bundle_runner, bundle_checks):
    """A user's PNG pair of different sizes/pixel spacings (resampled, not rejected) and a NIfTI
    pair with the 3D overlay: outputs on the fixed grid, the fixed NIfTI header kept, no folding
    blow-up, the committed weights untouched."""
    bundle_checks.assert_png_pair_registered("searchmorph", bundle_runner, data_dir, tmp_path / "png")

    weights = (BUNDLE / "models" / "model_hippocampus3d.pt").read_bytes()
    hip = "hippocampus/{}/hippocampus_{}.nii.gz"
    pair = {"moving": str(data_dir / hip.format("img", "004")), "fixed": str(data_dir / hip.format("img", "006")),
            "moving_label": str(data_dir / hip.format("label", "004")), "fixed_label": str(data_dir / hip.format("label", "006"))}
    bundle_runner("searchmorph", ["inference.json", "task_hippocampus3d.json"], output_dir=tmp_path / "nii", **pair)
    warped = nib.load(str(tmp_path / "nii" / "warped.nii.gz"))
    np.testing.assert_allclose(warped.affine, nib.load(pair["fixed"]).affine, atol=1e-5)
    assert warped.shape[:3] == (64, 64, 64)
    assert nib.load(str(tmp_path / "nii" / "ddf.nii.gz")).shape == (64, 64, 64, 1, 3)
    assert (BUNDLE / "models" / "model_hippocampus3d.pt").read_bytes() == weights


def test_evaluate_config_and_benchmark_discovery(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "eval"
    proc = bundle_runner("searchmorph", ["inference.json", "evaluate.json"], output_dir=out, num_pairs=2, num_figures=1)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"searchmorph", "identity"} and summary["searchmorph"]["pairs"] == 2
    assert "| searchmorph |" in proc.stdout
    from morphzoo.inference.bundles import list_registration_bundles, load_bundle_registrar

    assert "searchmorph" in list_registration_bundles()
    reg = load_bundle_registrar(BUNDLE, task="hippocampus3d", device="cpu")
    assert reg.spatial_dims == 3 and reg.spatial_size == (32, 32, 32)


def test_multi_gpu_train_two_processes_gloo(tmp_path, data_dir, bundle_torchrun):
    """DDP through torchrun with 2 CPU processes (gloo)."""
    proc = bundle_torchrun("searchmorph", ["train.json", "multi_gpu_train.json"], epoch_length=1, max_epochs=1, batch_size=1,
                           max_train_subjects=4, num_val_pairs=1, output_dir=tmp_path / "run", ckpt_dir=tmp_path / "models")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 1
    assert not any(k.startswith("module.") for k in ckpt["network"]), "saved the DDP wrapper, not the network"
