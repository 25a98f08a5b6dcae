"""The checks every bundle and every task overlay passes, parametrised over all of them (found from
``bundles/*/method.json``): the Model Zoo file set, ``verify_metadata``, ``verify_net_in_out``,
``ckpt_export`` equal to the network, a short training run on real data, and a user's own pair (or
image) through the command line with the default pipeline. Bundle-specific behaviour stays in
``test_bundle_<name>.py``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO


def _methods() -> dict[str, dict]:
    return {d.name: json.loads((d / "method.json").read_text()) for d in sorted((REPO / "bundles").iterdir()) if (d / "method.json").is_file()}


METHODS = _methods()
REGISTRATION = {b: m for b, m in METHODS.items() if m["kind"] == "registration"}
CASES = [(b, t) for b, m in REGISTRATION.items() for t in m["tasks"]]


def _overlay(bundle: str, task: str) -> list[str]:
    return [] if task == METHODS[bundle]["default_task"] else [f"task_{task}.json"]


def _parser(bundle: str, task: str, base: str = "inference.json"):
    from monai.bundle import ConfigParser

    bdir = REPO / "bundles" / bundle
    p = ConfigParser()
    p.read_config([str(bdir / "configs" / c) for c in [base] + _overlay(bundle, task)])
    p["bundle_root"] = str(bdir)
    return p


def _model_file(bundle: str, task: str) -> str:
    return _parser(bundle, task)["model_file"]


def _ids(cases):
    return [f"{b}-{t}" for b, t in cases]


@pytest.mark.parametrize("bundle", sorted(METHODS))
def test_file_set_and_metadata(bundle, bundle_checks):
    extra = []
    if bundle in REGISTRATION:
        extra = [f"configs/train_affine.json"] + [f"configs/{c}" for t in REGISTRATION[bundle]["tasks"] for c in _overlay(bundle, t)]
        extra += [f"models/{_model_file(bundle, t)}" for t in REGISTRATION[bundle]["tasks"]]
    bundle_checks.assert_file_set(bundle, tuple(extra))
    bundle_checks.assert_metadata_ok(bundle)


@pytest.mark.parametrize("bundle,task", CASES, ids=_ids(CASES))
def test_verify_net_in_out(bundle, task, tmp_path, bundle_checks):
    p = _parser(bundle, task)
    bundle_checks.assert_net_in_out_ok(bundle, ["inference.json"] + _overlay(bundle, task), tmp_path, p["spatial_size"], p["spatial_dims"])


@pytest.mark.parametrize("bundle,task", CASES, ids=_ids(CASES))
def test_ckpt_export_torchscript_matches_network(bundle, task, tmp_path, bundle_checks):
    p = _parser(bundle, task)
    model_file = p["model_file"]
    scripted = bundle_checks.ckpt_export(bundle, ["inference.json"] + _overlay(bundle, task), model_file, tmp_path / "model.ts")
    net = p.get_parsed_content("network_def")
    net.load_state_dict(torch.load(REPO / "bundles" / bundle / "models" / model_file, weights_only=True))
    net.eval()
    x = torch.rand(1, 2, *p["spatial_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)
        assert net(x).abs().max() > 1e-3, f"{bundle}/{task}: shipped weights look untrained (zero field)"


@pytest.mark.parametrize("bundle,task", CASES, ids=_ids(CASES))
def test_short_training_on_real_data(bundle, task, tmp_path, data_dir, bundle_runner, bundle_checks):
    """Two iterations of the bundle's train.json (the task's own pre-alignment included) on real subjects."""
    out = tmp_path / "run"
    proc = bundle_runner(bundle, ["train.json"] + _overlay(bundle, task), epoch_length=2, max_epochs=1, max_train_subjects=4,
                         num_val_pairs=2, batch_size=2, num_threads=1, output_dir=out, ckpt_dir=tmp_path / "models")
    bundle_checks.assert_short_training(proc, out, tmp_path / "models", _parser(bundle, task, "train.json")["model_file"])


def _own_pair(task: str, data_dir: Path, tmp: Path) -> dict[str, Path]:
    if task == "hc18_reg2d":
        hc = data_dir / "hc18" / "training_set"
        return {"moving": hc / "001_HC.png", "fixed": hc / "002_HC.png", "moving_label": hc / "001_HC_Annotation.png",
                "fixed_label": hc / "002_HC_Annotation.png"}
    h = data_dir / "hippocampus"
    pair = {"moving": h / "img" / "hippocampus_004.nii.gz", "fixed": h / "img" / "hippocampus_006.nii.gz",
            "moving_label": h / "label" / "hippocampus_004.nii.gz", "fixed_label": h / "label" / "hippocampus_006.nii.gz"}
    if task == "hippocampus2d":  # the benchmark's middle slice along the first axis, saved as 2D NIfTI files
        for k, p in list(pair.items()):
            img = nib.load(str(p))
            arr = np.asarray(img.dataobj)[32]
            pair[k] = tmp / f"{k}.nii.gz"
            nib.save(nib.Nifti1Image(arr.astype(np.float32 if "label" not in k else np.int16), np.eye(4)), str(pair[k]))
    return pair


@pytest.mark.parametrize("bundle,task", CASES, ids=_ids(CASES))
def test_own_pair_through_the_cli_runs_the_default_pipeline(bundle, task, tmp_path, data_dir, bundle_runner):
    """What a user runs: ``--moving/--fixed/--moving_label/--output_dir``. Outputs on the fixed grid,
    Dice in [0, 1], and every stage of the task's default pipeline timed in metrics.json."""
    p = _parser(bundle, task)
    pair = _own_pair(task, data_dir, tmp_path)
    out = tmp_path / "out"
    bundle_runner(bundle, ["inference.json"] + _overlay(bundle, task), output_dir=out, **{k: str(v) for k, v in pair.items()})
    meta = json.loads((out / "metrics.json").read_text())
    m = meta["metrics"]
    assert 0.0 <= m["dice"] <= 1.0 and m["time_ms"] > 0
    fixed_shape = nib.load(str(pair["fixed"])).shape if str(pair["fixed"]).endswith(".nii.gz") else None
    warped = nib.load(str(out / "warped.nii.gz"))
    if fixed_shape is not None:
        assert warped.shape == fixed_shape
    if p["prealign"] != "none":
        assert m["time_prealign_ms"] > 0 and m["time_network_ms"] > 0
    if p["refine_steps"] > 0:
        assert m["time_refine_ms"] > 0
    # the transform for other tools: resampling the moving image with transform.h5 (SimpleITK) is warped.nii.gz
    sitk = pytest.importorskip("SimpleITK")
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    fixed_s = sitk.ReadImage(str(pair["fixed"]), sitk.sitkFloat32)
    w = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(pair["moving"]), sitk.sitkFloat32), fixed_s, tx, sitk.sitkLinear, 0.0))
    ours = np.asarray(warped.dataobj)
    ours = ours.transpose(tuple(range(ours.ndim))[::-1]) if str(pair["fixed"]).endswith(".nii.gz") else ours
    inner = tuple(slice(4, -4) for _ in range(ours.ndim))
    assert np.corrcoef(w[inner].ravel(), ours[inner].ravel())[0, 1] > 0.99
    assert (out / "jacobian.nii.gz").is_file() and (out / "warp_ants.nii.gz").is_file() and (out / "affine_ants.mat").is_file()


def test_affine_weights_are_one_file_per_task():
    """Every bundle running a task with a learned pre-alignment ships that task's affine network, and
    it is the same trained file in every bundle (one affine per task, copied so each bundle stands alone)."""
    import hashlib

    digests: dict[str, set[str]] = {}
    for bundle, task in CASES:
        p = _parser(bundle, task)
        path = REPO / "bundles" / bundle / "models" / f"affine_{task}.pt"
        if p["prealign"] in ("net", "net+opt"):
            assert path.is_file(), f"{bundle}/{task}: default prealign {p['prealign']!r} but {path.name} is missing"
        if path.is_file():
            digests.setdefault(task, set()).add(hashlib.sha256(path.read_bytes()).hexdigest())
    for task, d in digests.items():
        assert len(d) == 1, f"{task}: the bundles ship {len(d)} different affine networks"
