"""End-to-end checks of the fcn_deep_selfsup bundle through MONAI's own bundle runner, on real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "fcn_deep_selfsup"
CFG = BUNDLE / "configs"
SCHEMA = REPO / "schemas" / "meta_schema_20240725.json"
HIPPO = ("hippocampus/img/hippocampus_{}.nii.gz", "hippocampus/label/hippocampus_{}.nii.gz")


def _py(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.parametrize("configs,extra", [
    (["train.json"], {}),
    (["train.json", "task_hc18_reg2d.json"], {}),
    (["train.json"], {"architecture": "coarse"}),
])
def test_train_one_short_epoch_on_real_data(configs, extra, tmp_path, data_dir, bundle_runner, bundle_checks):
    out = tmp_path / "run"
    proc = bundle_runner("fcn_deep_selfsup", configs, epoch_length=2, max_epochs=1, max_train_subjects=4, num_val_pairs=2,
                         batch_size=1, num_threads=1, output_dir=out, ckpt_dir=tmp_path / "models", **extra)
    model_file = "model_hc18_reg2d.pt" if "task_hc18_reg2d.json" in configs else "model.pt"
    ckpt = bundle_checks.assert_short_training(proc, out, tmp_path / "models", model_file)
    losses = ckpt["losses"]
    # deep self-supervision: -NCC summed with weights 1 + 0.6 + 0.3 can go below -1; a single field cannot
    assert all(v >= -1.0 - 1e-3 for v in losses) if extra else min(losses) > -1.9 - 1e-3
    assert ("reg1.weight" in ckpt["network"]) == (not extra), "architecture switch not applied"


def _hippo_pair(data_dir, a: str = "004", b: str = "006") -> dict[str, str]:
    return {
        "moving": str(data_dir / HIPPO[0].format(a)), "fixed": str(data_dir / HIPPO[0].format(b)),
        "moving_label": str(data_dir / HIPPO[1].format(a)), "fixed_label": str(data_dir / HIPPO[1].format(b)),
    }


def test_register_own_pair_and_instance_optimisation(tmp_path, data_dir, bundle_runner):
    """Plain registration keeps the fixed header and improves the pair's NCC; `--instance_steps N`
    (fine-tuning with the deep-supervision loss) and `--instance_from_scratch true` (the paper's
    "register a pair directly") give different fields; the committed weights are never modified."""
    pair = _hippo_pair(data_dir)
    weights = (BUNDLE / "models" / "model.pt").read_bytes()
    runs = {"plain": {}, "tuned": {"instance_steps": 2}, "scratch": {"instance_steps": 2, "instance_from_scratch": "true"}}
    fields = {}
    for name, extra in runs.items():
        bundle_runner("fcn_deep_selfsup", ["inference.json"], output_dir=tmp_path / name, **pair, **extra)
        fields[name] = np.asarray(nib.load(str(tmp_path / name / "ddf.nii.gz")).dataobj)
    out = tmp_path / "plain"
    fixed = nib.load(pair["fixed"])
    warped = nib.load(str(out / "warped.nii.gz"))
    np.testing.assert_allclose(warped.affine, fixed.affine, atol=1e-5)
    assert fields["plain"].shape == (64, 64, 64, 1, 3)
    assert not np.allclose(fields["plain"], fields["tuned"]) and not np.allclose(fields["tuned"], fields["scratch"])
    assert np.abs(fields["scratch"]).max() < np.abs(fields["plain"]).max()  # 2 steps from a near-zero field
    # the unsupervised objective (global NCC) improves on no registration; Dice gains are small on
    # average with these weights (see the model card) and this pair is one where it does not
    from morphzoo.inference import minmax_normalize
    from morphzoo.metrics import ncc_global

    img = lambda p: minmax_normalize(torch.as_tensor(np.asarray(nib.load(p).dataobj), dtype=torch.float32)[None, None])  # noqa: E731
    before = float(ncc_global(img(pair["moving"]), img(pair["fixed"]))[0])
    metrics = {k: json.loads((tmp_path / k / "metrics.json").read_text())["metrics"] for k in runs}
    assert metrics["plain"]["ncc"] > before + 0.05, (metrics["plain"]["ncc"], before)
    assert metrics["tuned"]["ncc"] > metrics["plain"]["ncc"], "two fine-tuning steps should raise the pair's NCC"
    assert (BUNDLE / "models" / "model.pt").read_bytes() == weights


def test_evaluate_config_and_benchmark_discovery(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "eval"
    proc = bundle_runner("fcn_deep_selfsup", ["inference.json", "task_hc18_reg2d.json", "evaluate.json"], output_dir=out,
                         num_pairs=2, num_figures=1)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"fcn_deep_selfsup", "identity"} and summary["fcn_deep_selfsup"]["pairs"] == 2
    assert "| fcn_deep_selfsup |" in proc.stdout
    from morphzoo.inference.bundles import list_registration_bundles, load_bundle_registrar

    assert "fcn_deep_selfsup" in list_registration_bundles(REPO / "bundles")
    reg = load_bundle_registrar(BUNDLE, task="hc18_reg2d", device="cpu")
    assert reg.spatial_dims == 2 and reg.spatial_size == (160, 240)


def test_multi_gpu_train_two_processes_gloo(tmp_path, data_dir, bundle_torchrun):
    """DDP through torchrun with 2 CPU processes (gloo); the multi-output network trains under DDP."""
    bundle_torchrun("fcn_deep_selfsup", ["train.json", "multi_gpu_train.json"], epoch_length=1, max_epochs=1,
                    max_train_subjects=4, num_val_pairs=1, output_dir=tmp_path / "run", ckpt_dir=tmp_path / "models")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 1
    assert not any(k.startswith("module.") for k in ckpt["network"]), "saved the DDP wrapper, not the network"
