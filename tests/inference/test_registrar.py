"""Registrar (morphzoo.inference.registrar): the registration inference interface on real and synthetic files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from scipy.ndimage import map_coordinates

from morphzoo.inference.evaluate import identity_registrar
from morphzoo.inference.registrar import OUTPUT_NAMES, Registrar, load_weights, minmax_normalize
from morphzoo.metrics import label_overlap_and_distance
from morphzoo.transforms.io import InputError, read_image, read_label


def _load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img


def _shift_fn(shift, axis=0, seen=None):
    def field_fn(m, f):
        if seen is not None:
            seen.append((tuple(m.shape), float(m.min()), float(m.max()), float(f.min()), float(f.max())))
        ddf = torch.zeros(m.shape[0], m.ndim - 2, *m.shape[2:], dtype=m.dtype)
        ddf[:, axis] = shift
        return ddf

    return field_fn


# ----------------------------------------------------------------------------- real hippocampus pair
def test_identity_on_real_pair_matches_direct_metrics(tmp_path, hippo_img, hippo_img2):
    (mov, mlab), (fix, flab) = hippo_img, hippo_img2
    reg = identity_registrar(3, labels=[0, 1, 2], device="cpu")
    metrics = reg.register_files(mov, fix, tmp_path / "out", moving_label=mlab, fixed_label=flab)
    m_arr, _ = _load(mlab)
    f_arr, f_img = _load(flab)
    direct = label_overlap_and_distance(m_arr, f_arr, [1, 2], spacing=(1.0, 1.0, 1.0))
    for k in ("dice", "dice_1", "dice_2", "hd95", "assd"):
        assert metrics[k] == pytest.approx(direct[k], abs=1e-6), k
    assert 0.0 < metrics["dice"] < 0.95  # two different subjects
    assert metrics["folding_count"] == 0 and metrics["folding_percent"] == 0.0
    assert metrics["time_ms"] >= 0.0

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)
    warped, w_img = _load(out / "warped.nii.gz")
    np.testing.assert_allclose(warped, _load(mov)[0], atol=1e-3)  # zero field: the moving image itself
    np.testing.assert_array_equal(_load(out / "warped_label.nii.gz")[0], m_arr)
    ddf, d_img = _load(out / "ddf.nii.gz")
    assert ddf.shape == (64, 64, 64, 1, 3) and not ddf.any()
    fixed_img = nib.load(str(fix))
    for img in (w_img, d_img):
        np.testing.assert_allclose(img.affine, fixed_img.affine)
        assert int(img.header["sform_code"]) == int(fixed_img.header["sform_code"])
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["moving"] == str(mov) and meta["fixed"] == str(fix) and meta["moving_label"] == str(mlab)
    assert meta["metrics"]["dice"] == pytest.approx(metrics["dice"])


def test_stray_label_value_rejected_by_registrar(tmp_path, hippo_dir, hippo_img):
    bad = hippo_dir / "label" / "hippocampus_003.nii.gz"
    reg = identity_registrar(3, labels=[0, 1, 2], device="cpu")
    with pytest.raises(InputError) as ei:
        reg.register_files(hippo_dir / "img" / "hippocampus_003.nii.gz", hippo_img[0], tmp_path / "o", moving_label=bad)
    assert str(bad) in str(ei.value) and "-2" in str(ei.value)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- synthetic known shift
@pytest.fixture()
def synthetic_pair(tmp_path, smooth_volume, save_nifti):
    n = 16
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-10.0, 4.0, 30.0]
    mov = 100.0 * smooth_volume((n, n, n), 7) + 50.0
    fix = 100.0 * smooth_volume((n, n, n), 8) + 50.0
    lab = np.zeros((n, n, n), np.int16)
    lab[4:10, 3:12, 5:11] = 1
    d = tmp_path / "in"
    d.mkdir()
    return {
        "moving": save_nifti(d / "moving.nii.gz", mov, aff),
        "fixed": save_nifti(d / "fixed.nii.gz", fix, aff),
        "moving_label": save_nifti(d / "moving_label.nii.gz", lab, aff),
        "mov": mov,
        "lab": lab,
        "affine": aff,
        "n": n,
    }


def test_known_shift_outputs(tmp_path, synthetic_pair):
    p, n, s = synthetic_pair, synthetic_pair["n"], 2
    seen = []
    reg = Registrar(None, spatial_dims=3, labels=[0, 1], device="cpu", field_fn=_shift_fn(s, 0, seen))
    out = tmp_path / "out"
    reg.register_files(p["moving"], p["fixed"], out, moving_label=p["moving_label"])
    # the field function sees normalised (1, 1, 16, 16, 16) images
    assert seen and seen[-1][0] == (1, 1, n, n, n)
    assert seen[-1][1] == pytest.approx(0.0) and seen[-1][2] == pytest.approx(1.0)
    warped, w_img = _load(out / "warped.nii.gz")
    # backward warping: warped(x) = moving(x + s) along axis 0, in the moving image's intensities
    np.testing.assert_allclose(warped[: n - s], p["mov"][s:], atol=1e-3)
    ddf, d_img = _load(out / "ddf.nii.gz")
    assert ddf.shape == (n, n, n, 1, 3)
    assert d_img.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(ddf[..., 0, 0], s, atol=1e-6)
    np.testing.assert_allclose(ddf[..., 0, 1:], 0, atol=1e-6)
    wl, _ = _load(out / "warped_label.nii.gz")
    np.testing.assert_array_equal(wl[: n - s], p["lab"][s:])
    assert not wl[n - s :].any()
    for img in (w_img, d_img):
        np.testing.assert_allclose(img.affine, p["affine"])
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["folding_count"] == 0


def test_second_write_without_overwrite_keeps_first(tmp_path, synthetic_pair):
    p = synthetic_pair
    out = tmp_path / "out"
    Registrar(None, 3, device="cpu", field_fn=_shift_fn(2)).register_files(p["moving"], p["fixed"], out, moving_label=p["moving_label"])
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    with pytest.raises(InputError) as ei:
        Registrar(None, 3, device="cpu", field_fn=_shift_fn(1)).register_files(p["moving"], p["fixed"], out, moving_label=p["moving_label"])
    assert "already exist" in str(ei.value) and str(out) in str(ei.value)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    # overwrite replaces them
    Registrar(None, 3, device="cpu", field_fn=_shift_fn(1)).register_files(
        p["moving"], p["fixed"], out, moving_label=p["moving_label"], overwrite=True
    )
    np.testing.assert_allclose(_load(out / "ddf.nii.gz")[0][..., 0, 0], 1.0)
    assert sorted(f.name for f in out.iterdir()) == sorted(OUTPUT_NAMES)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in", "out"]  # no temporary folders


def test_failing_field_writes_nothing(tmp_path, synthetic_pair):
    p = synthetic_pair

    def broken(m, f):
        raise RuntimeError("no field today")

    with pytest.raises(RuntimeError):
        Registrar(None, 3, device="cpu", field_fn=broken).register_files(p["moving"], p["fixed"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_network_grid_field_is_rescaled(synthetic_pair, smooth_volume):
    """A constant 2-voxel field on an 8^3 network grid is 2*(15-1)/(8-1) = 4 voxels on a 15^3 fixed grid."""

    class ConstNet(nn.Module):
        def forward(self, x):
            assert x.shape == (1, 2, 8, 8, 8)
            f = torch.zeros(1, 3, 8, 8, 8)
            f[:, 2] = 2.0
            return f

    reg = Registrar(ConstNet(), 3, spatial_size=(8, 8, 8), device="cpu")
    vol = smooth_volume((15, 15, 15), 9)
    from morphzoo.transforms.io import ImageRecord

    rec = ImageRecord(vol, np.eye(4), (1.0, 1.0, 1.0), "x.nii.gz", "nifti")
    res = reg.register_records(rec, rec)
    assert res.ddf.shape == (3, 15, 15, 15)
    np.testing.assert_allclose(res.ddf[2], 4.0, atol=1e-5)
    np.testing.assert_allclose(res.ddf[:2], 0.0, atol=1e-6)
    np.testing.assert_allclose(res.warped[:, :, :11], vol[:, :, 4:], atol=1e-4)


@pytest.mark.parametrize("grid", ["network", "fixed"])
def test_refine_grid_network_or_fixed(grid, smooth_volume):
    """The refinement stage sees the network grid (8^3) or the fixed grid (15^3), with the
    network's field rescaled to it, and its output is the pipeline's field on the fixed grid."""

    class ConstNet(nn.Module):
        def forward(self, x):
            f = torch.zeros(1, 3, *x.shape[2:])
            f[:, 2] = 2.0
            return f

    seen = {}

    def refine(moving, fixed, ddf):
        seen.update(moving=tuple(moving.shape), fixed=tuple(fixed.shape), ddf=ddf.clone())
        return ddf + 1.0  # one voxel more on every axis, on the grid it was given

    reg = Registrar(ConstNet(), 3, spatial_size=(8, 8, 8), device="cpu", refine=refine, refine_grid=grid)
    vol = smooth_volume((15, 15, 15), 9)
    from morphzoo.transforms.io import ImageRecord

    rec = ImageRecord(vol, np.eye(4), (1.0, 1.0, 1.0), "x.nii.gz", "nifti")
    res = reg.register_records(rec, rec)
    n = 8 if grid == "network" else 15
    assert seen["moving"] == seen["fixed"] == (1, 1, n, n, n) and seen["ddf"].shape == (1, 3, n, n, n)
    torch.testing.assert_close(seen["ddf"][0, 2], torch.full((n, n, n), 2.0 * (n - 1) / 7), rtol=0, atol=1e-5)
    scale = 14 / 7 if grid == "network" else 1.0  # refined on 8^3: its +1 is 2 voxels at 15^3
    np.testing.assert_allclose(res.ddf[2], 4.0 + scale, atol=1e-4)
    np.testing.assert_allclose(res.ddf[:2], scale, atol=1e-4)
    with pytest.raises(ValueError, match="refine_grid"):
        Registrar(ConstNet(), 3, device="cpu", refine_grid="moving")


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_network_passes_compose_on_the_warped_moving_image(passes, smooth_volume):
    """Each pass after the first sees the moving image warped by the field so far; constant shifts
    compose to their sum, and the output is still one interpolation of the moving image."""

    seen = []

    class ConstNet(nn.Module):
        def forward(self, x):
            seen.append(x[:, :1].clone())
            f = torch.zeros(1, 3, *x.shape[2:])
            f[:, 2] = 1.0
            return f

    reg = Registrar(ConstNet(), 3, device="cpu", size_multiple=1, network_passes=passes)
    vol = smooth_volume((15, 15, 15), 9)
    from morphzoo.transforms.io import ImageRecord

    rec = ImageRecord(vol, np.eye(4), (1.0, 1.0, 1.0), "x.nii.gz", "nifti")
    seen.clear()
    res = reg.register_records(rec, rec)
    assert len(seen) == 2 * passes  # the untimed warm-up call and the timed one
    np.testing.assert_allclose(res.ddf[2], float(passes), atol=1e-5)
    np.testing.assert_allclose(res.ddf[:2], 0.0, atol=1e-6)
    for k in range(1, passes):  # pass k + 1 registers the moving image shifted by k voxels
        np.testing.assert_allclose(seen[passes + k][0, 0, :, :, : 15 - k].numpy(), seen[passes][0, 0, :, :, k:].numpy(), atol=1e-5)
    np.testing.assert_allclose(res.warped[:, :, : 15 - passes], vol[:, :, passes:], atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_network_passes_must_be_positive_integer(bad):
    with pytest.raises(ValueError, match="network_passes"):
        Registrar(nn.Identity(), 3, device="cpu", network_passes=bad)


def test_2d_moving_with_3d_fixed_raises(tmp_path, synthetic_pair, save_nifti):
    flat = save_nifti(tmp_path / "flat.nii.gz", np.arange(256, dtype=np.float32).reshape(16, 16))
    reg = identity_registrar(3, device="cpu")
    with pytest.raises(InputError) as ei:
        reg.register_files(flat, synthetic_pair["fixed"], tmp_path / "out")
    msg = str(ei.value)
    assert str(flat) in msg and str(synthetic_pair["fixed"]) in msg
    assert not (tmp_path / "out").exists()
    # both 2D but the model is 3D: named too
    with pytest.raises(InputError, match="flat.nii.gz"):
        reg.register_files(flat, flat, tmp_path / "out")


def test_different_size_and_spacing_lands_on_fixed_grid(tmp_path, hippo_img, save_nifti):
    img_path, lab_path = hippo_img
    fix_arr, fix_img = _load(img_path)
    lab_arr, _ = _load(lab_path)
    # the same subject on a 48^3 grid of 64/48 mm voxels covering the same 64 mm box
    sp = 64.0 / 48.0
    off = -0.5 + sp / 2  # centre of voxel 0, in fixed voxel (= mm) units
    aff = np.diag([sp, sp, sp, 1.0])
    aff[:3, 3] = off
    coords = np.indices((48, 48, 48)).astype(np.float64) * sp + off
    mov = map_coordinates(fix_arr.astype(np.float64), coords, order=1, mode="nearest").astype(np.float32)
    mlab = map_coordinates(lab_arr, coords, order=0, mode="nearest").astype(np.int16)
    mp = save_nifti(tmp_path / "moving48.nii.gz", mov, aff)
    mlp = save_nifti(tmp_path / "moving48_label.nii.gz", mlab, aff)
    assert read_image(mp).spacing == pytest.approx((sp, sp, sp))

    reg = identity_registrar(3, labels=[0, 1, 2], device="cpu")
    out = tmp_path / "out"
    metrics = reg.register_files(mp, img_path, out, moving_label=mlp, fixed_label=lab_path)
    warped, w_img = _load(out / "warped.nii.gz")
    assert warped.shape == (64, 64, 64)
    np.testing.assert_allclose(w_img.affine, fix_img.affine)
    assert _load(out / "ddf.nii.gz")[0].shape == (64, 64, 64, 1, 3)
    wl, wl_img = _load(out / "warped_label.nii.gz")
    assert wl.shape == (64, 64, 64)
    np.testing.assert_allclose(wl_img.affine, fix_img.affine)
    # resampled back onto its own grid: close to the fixed image and labels
    inner = (slice(2, -2),) * 3
    corr = np.corrcoef(warped[inner].ravel(), fix_arr[inner].ravel())[0, 1]
    assert corr > 0.97
    assert metrics["dice"] > 0.75
    assert metrics["ncc"] > 0.9


def test_png_pair(tmp_path, hc18_images):
    mov, fix = hc18_images / "000_HC.png", hc18_images / "001_HC.png"
    mlab, flab = hc18_images / "000_HC_Annotation.png", hc18_images / "001_HC_Annotation.png"
    reg = identity_registrar(2, labels=[0, 1], device="cpu")
    out = tmp_path / "out"
    metrics = reg.register_files(mov, fix, out, moving_label=mlab, fixed_label=flab, moving_spacing=(0.07, 0.07), fixed_spacing=(0.09, 0.09))
    assert sorted(p.name for p in out.iterdir()) == sorted(list(OUTPUT_NAMES) + ["warped.png"])
    with Image.open(fix) as im:
        h, w = np.asarray(im).shape
    warped, w_img = _load(out / "warped.nii.gz")
    assert warped.shape == (h, w)
    np.testing.assert_allclose(w_img.affine, np.diag([0.09, 0.09, 1.0, 1.0]))
    np.testing.assert_allclose(warped, read_image(mov).array, atol=1e-2)  # same size, zero field
    with Image.open(out / "warped.png") as im:
        assert np.asarray(im).shape == (h, w)
    assert _load(out / "ddf.nii.gz")[0].shape == (h, w, 1, 1, 2)
    direct = label_overlap_and_distance(read_label(mlab).array, read_label(flab).array, [1], spacing=(0.09, 0.09))
    assert metrics["dice"] == pytest.approx(direct["dice"], abs=1e-6)
    assert metrics["hd95"] == pytest.approx(direct["hd95"], rel=1e-5)


def test_minmax_normalize_and_load_weights(tmp_path):
    x = torch.stack([torch.arange(4.0).view(1, 2, 2), torch.full((1, 2, 2), 3.0)])
    y = minmax_normalize(x)
    torch.testing.assert_close(y[0, 0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))
    assert not y[1].any()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_weights(nn.Linear(2, 2), tmp_path / "model.pt")
    src = nn.Linear(2, 2)
    torch.save({"model": src.state_dict()}, tmp_path / "ck.pt")
    dst = load_weights(nn.Linear(2, 2), tmp_path / "ck.pt")
    torch.testing.assert_close(dst.weight, src.weight)


def test_jacobian_map_agrees_with_the_folding_metrics(tmp_path, synthetic_pair):
    """``jacobian.nii.gz`` is det(I + grad ddf) on the fixed grid: the folding percentage counted on
    it equals ``metrics.json``'s, on a field that folds part of the image, and it is 1 - a for
    the linear field ddf_0 = -a x_0 (compression along axis 0)."""
    p, n = synthetic_pair, synthetic_pair["n"]

    def folding(m, f):
        x = torch.arange(n, dtype=m.dtype)
        ddf = torch.zeros(m.shape[0], 3, n, n, n, dtype=m.dtype)
        ddf[:, 0] = 3.0 * torch.sin(x / 2.0).view(1, n, 1, 1)  # d/dx0 = 1.5 cos(x/2): folds where cos < -2/3
        return ddf

    out = tmp_path / "fold"
    metrics = Registrar(None, 3, device="cpu", field_fn=folding).register_files(p["moving"], p["fixed"], out)
    det, img = _load(out / "jacobian.nii.gz")
    assert det.shape == (n, n, n)
    np.testing.assert_allclose(img.affine, p["affine"])
    assert metrics["folding_percent"] > 1.0
    assert 100.0 * float((det <= 0).mean()) == pytest.approx(metrics["folding_percent"], abs=1e-9)

    def linear(m, f):
        x = torch.arange(n, dtype=m.dtype)
        ddf = torch.zeros(m.shape[0], 3, n, n, n, dtype=m.dtype)
        ddf[:, 0] = -0.25 * x.view(1, n, 1, 1)
        return ddf

    Registrar(None, 3, device="cpu", field_fn=linear).register_files(p["moving"], p["fixed"], tmp_path / "lin")
    np.testing.assert_allclose(_load(tmp_path / "lin" / "jacobian.nii.gz")[0], 0.75, atol=1e-5)


def _rotation_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("header", ["rotated", "anisotropic"])
def test_pair_of_different_grids_is_interpolated_once(tmp_path, hippo_img, hippo_img2, save_nifti, header):
    """A real pair whose fixed header is rotated by 15 degrees (with a non-zero origin) or has
    1.0/1.1/0.9 mm voxels: the written warped image and label are the original moving arrays
    sampled once at inv(A_moving) A_fixed (x + ddf(x)) (checked with scipy's map_coordinates),
    not resampled onto the fixed grid and then warped (two interpolations, which lose label
    agreement: the check at the end)."""
    (mov_path, mlab_path), (fix_path, _) = hippo_img, hippo_img2
    fix_arr, fix_img = _load(fix_path)
    lin = _rotation_z(15.0) if header == "rotated" else np.diag([1.0, 1.1, 0.9])
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = fix_img.affine[:3, 3] + (np.array([3.0, -2.0, 1.5]) if header == "rotated" else 0.0)
    fixed = save_nifti(tmp_path / "fixed.nii.gz", fix_arr.astype(np.float32), aff)

    def smooth(m, f):  # a smooth, non-trivial field in fixed voxels
        n = m.shape[2:]
        grid = torch.meshgrid(*[torch.linspace(0, np.pi, s) for s in n], indexing="ij")
        return torch.stack([2.0 * torch.sin(grid[1]), -1.5 * torch.sin(grid[2]), torch.cos(grid[0])])[None]

    out = tmp_path / "out"
    Registrar(None, 3, labels=[0, 1, 2], device="cpu", field_fn=smooth).register_files(mov_path, fixed, out, moving_label=mlab_path)
    ddf = np.moveaxis(_load(out / "ddf.nii.gz")[0][..., 0, :], -1, 0)
    mov_arr, mov_img = _load(mov_path)
    mlab_arr, _ = _load(mlab_path)
    vox = np.linalg.inv(mov_img.affine) @ aff
    pos = np.indices(fix_arr.shape).astype(np.float64) + ddf
    coords = np.einsum("ij,j...->i...", vox[:3, :3], pos) + vox[:3, 3].reshape(3, 1, 1, 1)
    expected = map_coordinates(mov_arr.astype(np.float64), coords, order=1, mode="grid-constant", cval=0.0)
    expected_lab = map_coordinates(mlab_arr, coords, order=0, mode="grid-constant", cval=0)
    warped, wl = _load(out / "warped.nii.gz")[0], _load(out / "warped_label.nii.gz")[0]
    np.testing.assert_allclose(warped, expected, atol=1e-3 * float(mov_arr.max()))
    fg = expected_lab > 0
    dice = 2.0 * np.sum((wl == expected_lab) & fg) / (np.sum(wl > 0) + np.sum(fg))
    assert dice >= 0.99, dice
    # what two interpolations give (resample onto the fixed grid, then warp): visibly less agreement
    from morphzoo.transforms import read_image, resample_to_reference
    from monai.networks.blocks import Warp

    two_step = resample_to_reference(read_image(mlab_path), read_image(fixed), label=True)
    two_step = Warp("nearest", "zeros")(torch.as_tensor(two_step)[None, None].float(), torch.as_tensor(ddf)[None].float())[0, 0].numpy()
    dice_two = 2.0 * np.sum((two_step == expected_lab) & fg) / (np.sum(two_step > 0) + np.sum(fg))
    assert dice_two < dice


def test_own_pair_in_learn2reg_format(tmp_path, synthetic_pair, hippo_img, hippo_img2):
    """``learn2reg=True`` adds ``disp_FFFF_0000_MMMM_0000.npz`` (numbers from the file names, fixed
    first; ``disp.npz`` without numbers): the field of ``ddf.nii.gz``, channel-last."""
    reg = Registrar(None, 3, device="cpu", field_fn=_shift_fn(1.5, axis=2))
    out = tmp_path / "hippo"
    reg.register_files(hippo_img[0], hippo_img2[0], out, learn2reg=True)
    disp = np.load(out / "disp_0006_0000_0004_0000.npz")["arr_0"]
    ddf = _load(out / "ddf.nii.gz")[0][..., 0, :]
    assert disp.shape == (64, 64, 64, 3) and disp.dtype == np.float32
    np.testing.assert_array_equal(disp, ddf)
    p = synthetic_pair
    reg.register_files(p["moving"], p["fixed"], tmp_path / "plain", learn2reg=True)
    names = {f.name for f in (tmp_path / "plain").iterdir()}
    assert "disp.npz" in names and not any(n.startswith("disp_") for n in names)  # moving/fixed.nii.gz hold no number
    np.testing.assert_array_equal(np.load(tmp_path / "plain" / "disp.npz")["arr_0"][..., 2], 1.5)
