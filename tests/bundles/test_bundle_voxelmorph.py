"""End-to-end checks of the voxelmorph bundle through MONAI's own bundle runner, on real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "voxelmorph"
CFG = BUNDLE / "configs"
HIPPO = ("hippocampus/img/hippocampus_{}.nii.gz", "hippocampus/label/hippocampus_{}.nii.gz")


def test_verify_metadata_rejects_missing_key(tmp_path, bundle_checks):
    meta = json.loads((CFG / "metadata.json").read_text())
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    proc = bundle_checks.verify_metadata("voxelmorph", bad)
    assert proc.returncode != 0 and "network_data_format" in proc.stdout + proc.stderr


def test_training_killed_mid_epoch_resumes(tmp_path, data_dir, bundle_command, bundle_runner):
    """Kill a run (SIGKILL) after a mid-epoch checkpoint, run again: it resumes at the saved
    iteration with the saved optimizer state (Adam's step count continues) and finishes."""
    out, models = tmp_path / "run", tmp_path / "models"
    args = dict(epoch_length=10, max_epochs=1, max_train_subjects=4, num_val_pairs=1, ckpt_interval=2, output_dir=out, ckpt_dir=models)
    last = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(bundle_command("voxelmorph", ["train.json"], **args), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    deadline, saved_iter = time.time() + 300, 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                saved_iter = torch.load(last, weights_only=True)["trainer"]["iteration"]
                if saved_iter >= 2:
                    break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = torch.load(last, weights_only=True)
    saved_iter = saved["trainer"]["iteration"]
    assert 0 < saved_iter < 10, f"expected a mid-epoch checkpoint, got iteration {saved_iter}"
    assert not (models / "model.pt").exists(), "killed before validation: no best model yet"

    done = bundle_runner("voxelmorph", ["train.json"], **args)
    assert f"iteration {saved_iter}" in done.stdout + done.stderr, "resume was not logged"
    final = torch.load(last, weights_only=True)
    assert final["trainer"]["iteration"] == 10
    steps = {int(v["step"]) for v in final["optimizer"]["state"].values()}
    assert steps == {10}, f"Adam step counts {steps}: optimizer state was not restored"
    resumed_iters = [json.loads(line)["iteration"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert max(resumed_iters) == 10


def _hippo_pair(data_dir: Path, a: str = "004", b: str = "006") -> dict[str, Path]:
    return {
        "moving": data_dir / HIPPO[0].format(a), "fixed": data_dir / HIPPO[0].format(b),
        "moving_label": data_dir / HIPPO[1].format(a), "fixed_label": data_dir / HIPPO[1].format(b),
    }
def _same_header(a: Path, b: Path) -> None:
    ia, ib = nib.load(str(a)), nib.load(str(b))
    np.testing.assert_allclose(ia.affine, ib.affine, atol=1e-5)
    assert nib.aff2axcodes(ia.affine) == nib.aff2axcodes(ib.affine)
    assert int(ia.header["qform_code"]) == int(ib.header["qform_code"])
    assert int(ia.header["sform_code"]) == int(ib.header["sform_code"])
    np.testing.assert_allclose(ia.header.get_zooms()[:3], ib.header.get_zooms()[:3], atol=1e-6)
    assert ia.shape[:3] == ib.shape[:3]


def test_register_own_nifti_pair_keeps_fixed_header(tmp_path, data_dir, bundle_runner):
    pair = _hippo_pair(data_dir)
    out = tmp_path / "out"
    bundle_runner("voxelmorph", ["inference.json"], output_dir=out, **{k: str(v) for k, v in pair.items()})
    for name in ("warped.nii.gz", "warped_label.nii.gz", "ddf.nii.gz", "metrics.json"):
        assert (out / name).is_file(), name
    _same_header(out / "warped.nii.gz", pair["fixed"])
    _same_header(out / "warped_label.nii.gz", pair["fixed"])
    ddf = nib.load(str(out / "ddf.nii.gz"))
    assert ddf.shape == (64, 64, 64, 1, 3) and ddf.header.get_intent()[0] == "vector"
    lab = np.asarray(nib.load(str(out / "warped_label.nii.gz")).dataobj)
    assert set(np.unique(lab)) <= {0, 1, 2}
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    from morphzoo.metrics import label_overlap_and_distance

    direct = label_overlap_and_distance(lab, np.asarray(nib.load(str(pair["fixed_label"])).dataobj), [1, 2])
    assert metrics["dice"] == pytest.approx(direct["dice"], abs=1e-6)
    before = label_overlap_and_distance(np.asarray(nib.load(str(pair["moving_label"])).dataobj),
                                        np.asarray(nib.load(str(pair["fixed_label"])).dataobj), [1, 2])
    assert metrics["dice"] > before["dice"], "the trained model should improve on no registration"


def test_pair_of_different_size_and_spacing_is_resampled(tmp_path, data_dir, bundle_runner):
    """A moving image on a coarser 48^3 grid (spacing 4/3 mm) is resampled, not rejected, and the
    result lands on the fixed image's 64^3 grid and header."""
    from monai.transforms import Spacing

    pair = _hippo_pair(data_dir)
    src = nib.load(str(pair["moving"]))
    img = torch.as_tensor(np.asarray(src.dataobj, dtype=np.float32))[None]
    from monai.data import MetaTensor

    res = Spacing(pixdim=(4 / 3, 4 / 3, 4 / 3), mode="bilinear")(MetaTensor(img, affine=torch.as_tensor(src.affine)))
    moving = tmp_path / "moving_48.nii.gz"
    nib.save(nib.Nifti1Image(res[0].numpy(), res.affine.numpy()), str(moving))
    assert nib.load(str(moving)).shape != src.shape
    out = tmp_path / "out"
    bundle_runner("voxelmorph", ["inference.json"], moving=moving, fixed=pair["fixed"], output_dir=out)
    _same_header(out / "warped.nii.gz", pair["fixed"])


def test_register_own_png_pair_with_task_overlay(tmp_path, data_dir, bundle_runner):
    hc = data_dir / "hc18" / "training_set"
    out = tmp_path / "out"
    bundle_runner("voxelmorph", ["inference.json", "task_hc18_reg2d.json"], moving=hc / "001_HC.png",
                  fixed=hc / "002_HC.png", moving_label=hc / "001_HC_Annotation.png",
                  fixed_label=hc / "002_HC_Annotation.png", output_dir=out)
    from PIL import Image

    h, w = np.asarray(Image.open(hc / "002_HC.png")).shape[:2]
    assert nib.load(str(out / "warped.nii.gz")).shape == (h, w)
    assert nib.load(str(out / "ddf.nii.gz")).shape == (h, w, 1, 1, 2)
    assert (out / "warped.png").is_file()
    # Dice in metrics.json is computed in the fixed image's own grid, in mm: recompute it from the files
    from morphzoo.data import load_hc18_mask
    from morphzoo.metrics import label_overlap_and_distance

    warped = np.asarray(nib.load(str(out / "warped_label.nii.gz")).dataobj)
    assert warped.shape == (h, w) and set(np.unique(warped)) <= {0, 1}
    direct = label_overlap_and_distance(warped, load_hc18_mask(hc / "002_HC_Annotation.png"), [1])
    assert json.loads((out / "metrics.json").read_text())["metrics"]["dice"] == pytest.approx(direct["dice"], abs=1e-6)


# ---------------------------------------------------------------- bad input: clear error, nothing written
def _bad_cases(data_dir: Path, tmp: Path) -> dict[str, tuple[dict, str]]:
    pair = _hippo_pair(data_dir)
    src = nib.load(str(pair["moving"]))
    arr = np.asarray(src.dataobj, dtype=np.float32)
    cases: dict[str, tuple[dict, str]] = {}
    two_d = tmp / "slice2d.nii.gz"
    nib.save(nib.Nifti1Image(arr[32], np.eye(4)), str(two_d))
    cases["2d_vs_3d"] = ({"moving": two_d, "fixed": pair["fixed"]}, "2D")
    two_ch = tmp / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([arr, arr], -1), src.affine), str(two_ch))
    cases["two_channels"] = ({"moving": two_ch, "fixed": pair["fixed"]}, "channels")
    nan = tmp / "nan.nii.gz"
    bad = arr.copy()
    bad[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(bad, src.affine), str(nan))
    cases["nan"] = ({"moving": pair["moving"], "fixed": nan}, "NaN")
    cases["missing"] = ({"moving": tmp / "nope.nii.gz", "fixed": pair["fixed"]}, "does not exist")
    trunc = tmp / "truncated.nii.gz"
    raw = pair["moving"].read_bytes()
    trunc.write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = ({"moving": trunc, "fixed": pair["fixed"]}, "corrupt or truncated")
    lab = tmp / "label_5.nii.gz"
    larr = np.asarray(nib.load(str(pair["moving_label"])).dataobj).astype(np.int16)
    larr[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(larr, src.affine), str(lab))
    cases["label_values"] = ({"moving": pair["moving"], "fixed": pair["fixed"], "moving_label": lab}, "outside the declared labels")
    const = tmp / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros_like(arr), src.affine), str(const))
    cases["constant"] = ({"moving": const, "fixed": pair["fixed"]}, "is constant")
    return cases


def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path, data_dir, capsys):
    """Each bad input, through MONAI's bundle runner in-process: exit status 2, the last line printed
    names the file and the problem, and the output folder stays empty."""
    from monai.bundle import run

    for name, (args, problem) in _bad_cases(data_dir, tmp_path).items():
        out = tmp_path / f"out_{name}"
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            run(config_file=str(CFG / "inference.json"), bundle_root=str(BUNDLE), output_dir=str(out),
                **{k: str(v) for k, v in args.items()})
        assert info.value.code == 2, f"{name}: exit {info.value.code}"
        last = capsys.readouterr().err.strip().splitlines()[-1]
        culprit = [str(v) for k, v in args.items() if problem and k in ("moving", "fixed", "moving_label")]
        assert last.startswith("error: ") and problem in last and any(c in last for c in culprit), f"{name}: {last}"
        assert not out.exists() or not any(out.iterdir()), f"{name}: partial output written"


def test_bad_input_cli_exits_nonzero_with_message(tmp_path, data_dir, bundle_runner):
    args, problem = _bad_cases(data_dir, tmp_path)["nan"]
    out = tmp_path / "out"
    proc = bundle_runner("voxelmorph", ["inference.json"], check=False, output_dir=out, **{k: str(v) for k, v in args.items()})
    assert proc.returncode == 2
    # one readable line naming the file and the problem is the last thing printed (no traceback below it)
    assert proc.stderr.strip().splitlines()[-1] == f"error: {args['fixed']}: fixed image contains 1 NaN and 0 Inf values."
    assert not out.exists() or not any(out.iterdir())


def test_existing_output_needs_overwrite(tmp_path, data_dir, bundle_runner):
    pair = {k: str(v) for k, v in _hippo_pair(data_dir).items() if k in ("moving", "fixed")}
    out = tmp_path / "out"
    bundle_runner("voxelmorph", ["inference.json"], output_dir=out, **pair)
    before = (out / "warped.nii.gz").stat().st_mtime_ns
    proc = bundle_runner("voxelmorph", ["inference.json"], check=False, output_dir=out, **pair)
    assert proc.returncode != 0 and "already exist" in proc.stderr and "--overwrite true" in proc.stderr
    assert (out / "warped.nii.gz").stat().st_mtime_ns == before
    bundle_runner("voxelmorph", ["inference.json"], output_dir=out, overwrite="true", **pair)
    assert (out / "warped.nii.gz").stat().st_mtime_ns != before


def test_evaluate_config_writes_table_with_identity(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "eval"
    proc = bundle_runner("voxelmorph", ["inference.json", "evaluate.json"], output_dir=out, num_pairs=2, num_figures=1)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"voxelmorph", "identity"} and summary["voxelmorph"]["pairs"] == 2
    rows = (out / "pairs.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2
    assert "| voxelmorph |" in proc.stdout and "| identity |" in proc.stdout
    assert summary["identity"]["folding_percent"]["mean"] == 0.0


def test_multi_gpu_train_two_processes_gloo(tmp_path, data_dir, bundle_torchrun):
    """DDP through torchrun with 2 CPU processes (gloo); NCCL is used where GPUs exist."""
    bundle_torchrun("voxelmorph", ["train.json", "multi_gpu_train.json"], epoch_length=2, max_epochs=1,
                    max_train_subjects=4, num_val_pairs=2, output_dir=tmp_path / "run", ckpt_dir=tmp_path / "models")
    assert (tmp_path / "models" / "model.pt").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    assert not any(k.startswith("module.") for k in ckpt["network"]), "saved the DDP wrapper, not the network"


def test_instance_optimisation_switch_through_the_bundle(tmp_path, data_dir, bundle_runner):
    """`--instance_steps N` fine-tunes a copy of the network on the pair; the result differs from the
    plain prediction, and the committed weights are unchanged."""
    pair = {k: str(v) for k, v in _hippo_pair(data_dir).items()}
    weights = (BUNDLE / "models" / "model.pt").read_bytes()
    plain, tuned = tmp_path / "plain", tmp_path / "tuned"
    bundle_runner("voxelmorph", ["inference.json"], output_dir=plain, **pair)
    bundle_runner("voxelmorph", ["inference.json"], output_dir=tuned, instance_steps=3, **pair)
    a = np.asarray(nib.load(str(plain / "ddf.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tuned / "ddf.nii.gz")).dataobj)
    assert a.shape == b.shape and not np.allclose(a, b)
    assert (BUNDLE / "models" / "model.pt").read_bytes() == weights
