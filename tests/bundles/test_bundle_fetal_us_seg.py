"""End-to-end checks of the fetal_us_seg bundle through MONAI's own bundle runner, on real HC18 data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import REPO

BUNDLE = REPO / "bundles" / "fetal_us_seg"
CFG = BUNDLE / "configs"


def _test_items(n: int = 2) -> list[dict]:
    return json.loads((REPO / "datalists" / "hc18_seg.json").read_text())["test"][:n]


def test_verify_metadata_and_net_in_out(bundle_checks, tmp_path):
    bundle_checks.assert_metadata_ok("fetal_us_seg")
    bundle_checks.assert_net_in_out_ok("fetal_us_seg", ["inference.json"], tmp_path)


def test_ckpt_export_torchscript_matches_network(tmp_path, bundle_checks):
    scripted = bundle_checks.ckpt_export("fetal_us_seg", ["inference.json"], "model.pt", tmp_path / "model.ts")
    from morphzoo.networks.nets import GhostSCUNet

    net = GhostSCUNet(2, 1, 2)
    net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", weights_only=True))
    net.eval()
    x = torch.rand(1, 1, 160, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-4, atol=1e-4)


def test_training_and_inference_preprocessing_agree(data_dir, bundle_checks):
    """MONAI Label and training see the same tensor (LoadImaged vs the validated LoadSubjectd)."""
    bundle_checks.assert_preprocessing_agree("fetal_us_seg", _test_items(1)[0], data_dir, (1, 160, 240))


def test_training_labels_are_resampled_on_the_image_grid(data_dir):
    """The label must land where the image does: resized with the image's geometry (bilinear,
    ``align_corners=True``; one-hot, then argmax), not by torch's ``nearest``, which samples
    ``floor(i * in / out)`` and moved the heads by up to a network pixel towards the far corner
    (before the fix the network's masks reached 2.42 px beyond the reference
    on validation, by `run_id calibrate`, against 0.924 px for the reference masks)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Resize

    from morphzoo.data.hc18 import load_hc18_mask

    parser = ConfigParser()
    parser.read_config(str(CFG / "train.json"))
    parser["dataset_dir"] = str(data_dir)
    item = _test_items(1)[0]
    got = torch.as_tensor(parser.get_parsed_content("preprocessing")(dict(item))["label"])
    ref = torch.as_tensor(np.asarray(load_hc18_mask(data_dir / item["label"]), np.float32))[None]
    want = Resize((160, 240), mode="bilinear", align_corners=True)(ref) >= 0.5
    assert got.shape == (1, 160, 240) and set(torch.unique(got).tolist()) == {0.0, 1.0}
    assert int((got.bool() != want).sum()) <= 2  # ties at exactly 0.5 only
    nearest = Resize((160, 240), mode="nearest")(ref) > 0.5
    assert int((nearest != want).sum()) > 20  # the old resampling differs: the check can fail


def test_shadow_augmentation_darkens_image_patches_and_leaves_the_label(data_dir):
    """``shadow_prob`` (off by default) drops 1-3 rectangles of the image to 0, an acoustic-shadow
    proxy; the label must stay the annotation, so the network learns to complete the skull."""
    from monai.bundle import ConfigParser

    def augmented(prob: float) -> dict:
        parser = ConfigParser()
        parser.read_config(str(CFG / "train.json"))
        parser["dataset_dir"] = str(data_dir)
        parser["shadow_prob"] = prob
        pre = parser.get_parsed_content("preprocessing")(dict(_test_items(1)[0]))
        aug = parser.get_parsed_content("augmentation")
        drop = aug.transforms[[type(t).__name__ for t in aug.transforms].index("RandCoarseDropoutd")]
        drop.set_random_state(0)
        pre["image"] = torch.ones_like(torch.as_tensor(pre["image"]))  # the fan's black corners would hide a patch
        return pre, drop({k: torch.as_tensor(v).clone() for k, v in pre.items() if k in ("image", "label")})

    assert ConfigParser.load_config_file(str(CFG / "train.json"))["shadow_prob"] == 0.0
    pre, out = augmented(1.0)
    changed = torch.as_tensor(out["image"]) != torch.as_tensor(pre["image"])
    assert 24 * 24 <= int(changed.sum()) <= 3 * 64 * 64
    assert float(torch.as_tensor(out["image"])[changed].abs().max()) == 0.0  # dark, as a shadow
    torch.testing.assert_close(torch.as_tensor(out["label"]), torch.as_tensor(pre["label"]))
    pre, out = augmented(0.0)
    torch.testing.assert_close(torch.as_tensor(out["image"]), torch.as_tensor(pre["image"]))


def test_soft_labels_keep_the_boundary_sub_pixel_and_the_pipeline_consistent(data_dir):
    """``soft_labels`` (off by default) trains on the label's partial-volume fractions at 160x240
    (anti-aliased resize of the one-hot mask, no argmax): at 0.5 they are the hard label, on the
    boundary they lie strictly between 0 and 1, and after augmentation the two channels sum to 1
    (background = 1 - head, so padding and the smoothing's zero border are background); the loss takes them without one-hot conversion."""
    from monai.bundle import ConfigParser

    def parsed(soft: bool) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(CFG / "train.json"))
        parser["dataset_dir"] = str(data_dir)
        parser["soft_labels"] = soft
        return parser

    item = _test_items(1)[0]
    assert ConfigParser.load_config_file(str(CFG / "train.json"))["soft_labels"] is False
    hard = torch.as_tensor(parsed(False).get_parsed_content("preprocessing")(dict(item))["label"])
    parser = parsed(True)
    soft = torch.as_tensor(parser.get_parsed_content("preprocessing")(dict(item))["label"])
    assert soft.shape == (2, 160, 240) and float(soft.min()) >= 0.0 and float(soft.max()) <= 1.0
    assert int(((soft[1] >= 0.5) != hard[0].bool()).sum()) <= 10  # the same head, up to ties on its boundary
    assert abs(float(soft[1].sum() - hard.sum())) < 0.005 * float(hard.sum())  # and the same area
    partial = (soft[1] > 0.02) & (soft[1] < 0.98)
    assert int(partial.sum()) > 200  # a band along the boundary, not a hard mask
    aug = parser.get_parsed_content("augmentation")
    aug.set_random_state(3)
    out = aug({"image": torch.zeros(1, 160, 240), "label": soft.clone()})
    y = torch.as_tensor(out["label"])
    torch.testing.assert_close(y.sum(0), torch.ones(160, 240))
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    loss = parser.get_parsed_content("loss")
    logits = torch.stack([-(y[1] - 0.5) * 40, (y[1] - 0.5) * 40])[None].requires_grad_()
    value = loss(logits, y[None])
    value.backward()
    assert torch.isfinite(value) and float(value) < float(loss(torch.zeros_like(logits), y[None]))


def test_boundary_loss_weight_adds_monai_hausdorff_dt_loss():
    """``boundary_loss_weight`` (0 by default: Dice + CE alone) adds w x MONAI's ``HausdorffDTLoss``
    (squared error weighted by both masks' distance transforms): a mask that misses a band of the
    head costs more with it, a perfect one costs the same, and gradients reach the logits."""
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss

    def loss(weight: float):
        parser = ConfigParser()
        parser.read_config(str(CFG / "train.json"))
        parser["boundary_loss_weight"] = weight
        return parser.get_parsed_content("loss")

    assert ConfigParser.load_config_file(str(CFG / "train.json"))["boundary_loss_weight"] == 0.0
    assert isinstance(loss(0.0), DiceCELoss)
    yy, xx = torch.meshgrid(torch.arange(160.0), torch.arange(240.0), indexing="ij")
    head = (((yy - 80) / 60) ** 2 + ((xx - 120) / 90) ** 2 <= 1).float()
    shrunk = (((yy - 80) / 60) ** 2 + ((xx - 120) / 70) ** 2 <= 1).float()  # the lateral walls lost
    target = head[None, None]

    def logits(mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([-(mask - 0.5) * 40, (mask - 0.5) * 40])[None]

    plain, boundary = loss(0.0), loss(1.0)
    perfect, missed = logits(head), logits(shrunk).requires_grad_()
    assert float(boundary(perfect, target)) == pytest.approx(float(plain(perfect, target)), abs=1e-4)
    extra = float(boundary(missed, target)) - float(plain(missed, target))
    assert extra > 0.05
    boundary(missed, target).backward()
    assert missed.grad is not None and float(missed.grad.abs().sum()) > 0


def test_train_one_short_epoch_on_real_data(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "run"
    proc = bundle_runner("fetal_us_seg", ["train.json"], epoch_length=2, max_epochs=1, max_train_images=16,
                         max_val_images=4, output_dir=out, ckpt_dir=tmp_path / "models")
    losses = [float(v) for v in re.findall(r"train_loss: (\S+)", proc.stdout + proc.stderr)]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    val = [r for r in log if "val_mean_dice" in r]
    assert val and 0.0 <= val[-1]["val_mean_dice"] <= 1.0
    assert (tmp_path / "models" / "model.pt").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert set(ckpt) >= {"network", "optimizer", "lr_scheduler", "trainer"} and ckpt["trainer"]["iteration"] == 2


def test_training_starts_from_init_checkpoint(tmp_path, data_dir, bundle_runner):
    """--init_checkpoint fine-tunes from a weight file (e.g. the shipped one at another input size):
    with learning rate 0 every parameter of the saved model is the file's (BN statistics move)."""
    shipped = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    bundle_runner("fetal_us_seg", ["train.json"], epoch_length=1, max_epochs=1, max_train_images=8, max_val_images=2,
                  learning_rate=0.0, spatial_size=[128, 192], init_checkpoint=BUNDLE / "models" / "model.pt",
                  output_dir=tmp_path / "run", ckpt_dir=tmp_path / "models")
    saved = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    names = [k for k in shipped if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(names) > 50 and set(saved) == set(shipped)
    for k in names:
        torch.testing.assert_close(saved[k], shipped[k], rtol=0, atol=0, msg=k)

def test_segment_own_png_writes_mask_in_input_grid_with_hc(tmp_path, data_dir, bundle_runner):
    item = _test_items(1)[0]
    out = tmp_path / "out"
    bundle_runner("fetal_us_seg", ["inference.json"], image=data_dir / item["image"], pixel_size_mm=item["pixel_size_mm"], output_dir=out)
    for name in ("mask.nii.gz", "mask.png", "overlay.png", "result.json"):
        assert (out / name).is_file(), name
    mask = np.asarray(nib.load(str(out / "mask.nii.gz")).dataobj)
    assert mask.shape == tuple(item["size_hw"]) and set(np.unique(mask)) <= {0, 1}
    from morphzoo.data.hc18 import load_hc18_mask

    ref = load_hc18_mask(data_dir / item["label"])
    dice = 2 * (mask * ref).sum() / (mask.sum() + ref.sum())
    assert dice > 0.8, f"shipped weights segment {item['image']} with Dice {dice:.3f}"  # 001_HC: the hardest of the demo images (card)
    # the default writes the fitted ellipse (the model card's ellipse_mask): redrawing it changes a pixel ring at most
    from morphzoo.metrics import fill_ellipse

    assert (fill_ellipse(mask, None, "contour") != mask).sum() < 0.005 * mask.sum()
    res = json.loads((out / "result.json").read_text())
    assert res["head_circumference_unit"] == "mm"
    assert abs(res["head_circumference"] - item["hc_mm"]) / item["hc_mm"] < 0.15, (res, item["hc_mm"])


def test_ellipse_mask_false_from_the_command_line_writes_the_network_mask(tmp_path, data_dir, bundle_runner):
    from morphzoo.metrics import fill_ellipse

    item = _test_items(2)[1]
    masks = {}
    for flag in ("true", "false"):  # fire passes lower-case words as strings
        out = tmp_path / flag
        bundle_runner("fetal_us_seg", ["inference.json"], image=data_dir / item["image"], pixel_size_mm=item["pixel_size_mm"],
                      output_dir=out, ellipse_mask=flag)
        masks[flag] = np.asarray(nib.load(str(out / "mask.nii.gz")).dataobj)
    assert (masks["true"] != masks["false"]).sum() > 0
    redraw = {k: (fill_ellipse(m, None, "contour") != m).sum() for k, m in masks.items()}
    assert redraw["true"] < redraw["false"], redraw  # only the default is an ellipse already


def test_segment_own_nifti_keeps_header(tmp_path, data_dir, bundle_runner):
    from PIL import Image

    item = _test_items(1)[0]
    arr = np.asarray(Image.open(data_dir / item["image"]), dtype=np.float32)
    aff = np.diag([0.15, 0.15, 1.0, 1.0])
    aff[:3, 3] = [-12.0, 7.5, 3.0]
    src = tmp_path / "us.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(src))
    out = tmp_path / "out"
    bundle_runner("fetal_us_seg", ["inference.json"], image=src, output_dir=out)
    m = nib.load(str(out / "mask.nii.gz"))
    assert m.shape == arr.shape
    np.testing.assert_allclose(m.affine, nib.load(str(src)).affine, atol=1e-6)
    res = json.loads((out / "result.json").read_text())
    assert res["head_circumference_unit"] == "mm" and res["head_circumference"] > 0
    assert not (out / "mask.png").exists()


def _bad_images(data_dir: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    from PIL import Image

    arr = np.asarray(Image.open(data_dir / _test_items(1)[0]["image"]), dtype=np.float32)
    cases = {}
    nan = tmp / "nan.nii.gz"
    bad = arr.copy()
    bad[5, 5] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(nan))
    cases["nan"] = (nan, "NaN")
    vol = tmp / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([arr] * 4, -1), np.eye(4)), str(vol))
    cases["3d"] = (vol, "3D")
    cases["missing"] = (tmp / "nope.png", "does not exist")
    trunc = tmp / "truncated.png"
    raw = (data_dir / _test_items(1)[0]["image"]).read_bytes()
    trunc.write_bytes(raw[: len(raw) // 3])
    cases["truncated"] = (trunc, "corrupt or truncated")
    return cases


def test_bad_images_fail_clearly_and_write_nothing(tmp_path, data_dir, bundle_runner):
    for name, (path, problem) in _bad_images(data_dir, tmp_path).items():
        out = tmp_path / f"out_{name}"
        proc = bundle_runner("fetal_us_seg", ["inference.json"], check=False, image=path, output_dir=out)
        assert proc.returncode != 0, name
        assert str(path) in proc.stderr and problem in proc.stderr, f"{name}: {proc.stderr[-1500:]}"
        assert not out.exists() or not any(out.iterdir()), f"{name}: partial output"


def test_existing_output_needs_overwrite(tmp_path, data_dir, bundle_runner):
    item = _test_items(1)[0]
    out = tmp_path / "out"
    bundle_runner("fetal_us_seg", ["inference.json"], image=data_dir / item["image"], output_dir=out)
    before = (out / "mask.nii.gz").stat().st_mtime_ns
    proc = bundle_runner("fetal_us_seg", ["inference.json"], check=False, image=data_dir / item["image"], output_dir=out)
    assert proc.returncode != 0 and "--overwrite true" in proc.stderr
    assert (out / "mask.nii.gz").stat().st_mtime_ns == before


def test_evaluate_compares_with_plain_unet_in_original_grid(tmp_path, data_dir, bundle_runner):
    out = tmp_path / "eval"
    proc = bundle_runner("fetal_us_seg", ["inference.json", "evaluate.json"], output_dir=out, num_images=2, num_figures=1)
    summary = json.loads((out / "summary.json").read_text())
    raw = "fetal_us_seg[ellipse_mask=false]"
    assert set(summary) == {"fetal_us_seg", raw, "plain_unet"}
    for m in summary.values():
        assert m["pairs"] == 2 and m["failed"] == 0
        assert {"dice", "iou", "precision", "recall", "rmse", "hd95", "assd", "hc_abs_error_mm", "time_ms"} <= set(m)
    assert summary["fetal_us_seg"]["parameters"] < summary["plain_unet"]["parameters"]
    # the ellipse prior changes the mask, not the probabilities (RMSE) or the HC (fitted to the network's mask)
    for key in ("rmse", "hc_abs_error_mm"):
        assert summary["fetal_us_seg"][key]["mean"] == pytest.approx(summary[raw][key]["mean"], rel=1e-9)
    assert summary["fetal_us_seg"]["dice"]["mean"] != summary[raw]["dice"]["mean"]
    assert "| fetal_us_seg |" in proc.stdout
    assert len(list((out / "figures").glob("*.png"))) == 3


def test_multi_gpu_train_two_processes_gloo(tmp_path, data_dir, bundle_torchrun):
    bundle_torchrun("fetal_us_seg", ["train.json", "multi_gpu_train.json"], epoch_length=1, max_epochs=1,
                    max_train_images=8, max_val_images=2, batch_size=2, output_dir=tmp_path / "run",
                    ckpt_dir=tmp_path / "models")
    assert (tmp_path / "models" / "model.pt").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["network"])


def test_calibrate_prints_each_networks_hc_offset_on_validation_images(bundle_runner):
    """`run_id calibrate` measures hc_offset_px on the networks' own validation masks (never test)."""
    proc = bundle_runner("fetal_us_seg", ["inference.json", "evaluate.json"], run_id="calibrate", num_images=3)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    offsets = json.loads(line)
    assert set(offsets) == {"fetal_us_seg", "plain_unet"}
    # pixels of the original images, the median over three images: finite and within a few
    # network pixels (one network pixel is 3.4 image pixels) of the reference masks' 0.924
    assert all(math.isfinite(v) and abs(v - 0.924) < 10.0 for v in offsets.values()), offsets
