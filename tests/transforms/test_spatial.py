"""Resampling between grids (morphzoo.transforms.spatial) with analytic expectations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphzoo.transforms.io import ImageRecord, read_image
from monai.networks.blocks import Warp

from morphzoo.transforms.spatial import compose_ddf, resample_to_reference, resize_field, resize_image


def _linear(x, y, z):
    """A function of world position: trilinear interpolation reproduces it exactly."""
    return 0.5 * x + 0.25 * y - 0.1 * z + 3.0


def test_identical_grids_return_input_unchanged(hippo_img):
    rec = read_image(hippo_img[0])
    out = resample_to_reference(rec, rec)
    np.testing.assert_array_equal(out, rec.array)
    lab = read_image(hippo_img[1])
    np.testing.assert_array_equal(resample_to_reference(lab, rec, label=True), lab.array)


def test_half_size_double_spacing_maps_to_world_positions(tmp_path, save_nifti):
    n = 16
    origin = np.array([10.0, -5.0, 3.0])
    aff_f = np.eye(4)
    aff_f[:3, 3] = origin
    jf = np.indices((n, n, n)).astype(np.float64)
    fixed = _linear(*[jf[i] + origin[i] for i in range(3)]).astype(np.float32)
    # moving: n/2 voxels of 2 mm covering the same extent (edge-aligned: centre of voxel 0 at origin + 0.5)
    aff_m = np.diag([2.0, 2.0, 2.0, 1.0])
    aff_m[:3, 3] = origin + 0.5
    im = np.indices((n // 2,) * 3).astype(np.float64)
    moving = _linear(*[2 * im[i] + aff_m[i, 3] for i in range(3)]).astype(np.float32)
    F = read_image(save_nifti(tmp_path / "fixed.nii.gz", fixed, aff_f))
    M = read_image(save_nifti(tmp_path / "moving.nii.gz", moving, aff_m))
    assert M.spacing == (2.0, 2.0, 2.0)
    out = resample_to_reference(M, F)
    assert out.shape == (n, n, n) and out.dtype == np.float32
    # fixed voxels 1..n-2 lie inside the moving centres' span [0.5, n-1.5] (fixed voxel units)
    inner = (slice(1, n - 1),) * 3
    np.testing.assert_allclose(out[inner], fixed[inner], atol=1e-4)
    # a single bright moving voxel lands where its world position is
    spot = np.zeros((n // 2,) * 3, np.float32)
    spot[3, 2, 5] = 1.0
    S = read_image(save_nifti(tmp_path / "spot.nii.gz", spot, aff_m))
    lab = resample_to_reference(S, F, label=True)  # nearest: the 2 mm voxel covers 2x2x2 fixed voxels
    idx = np.argwhere(lab > 0)
    world = idx + origin
    centre = np.array([3, 2, 5]) * 2.0 + aff_m[:3, 3]
    assert len(idx) == 8
    np.testing.assert_allclose(world.mean(axis=0), centre)
    assert set(np.unique(lab).tolist()) == {0.0, 1.0}


def test_resample_translated_moving(tmp_path, save_nifti):
    """Same spacing, origin shifted by 3 voxels along axis 1: the array is shifted by 3."""
    n = 12
    a = np.random.default_rng(1).random((n, n, n)).astype(np.float32)
    aff_m = np.eye(4)
    aff_m[1, 3] = 3.0
    F = read_image(save_nifti(tmp_path / "f.nii.gz", a + 1.0, np.eye(4)))  # only its grid matters
    M = read_image(save_nifti(tmp_path / "m.nii.gz", a, aff_m))
    out = resample_to_reference(M, F)
    # fixed voxel j (world j) = moving voxel j - 3
    np.testing.assert_allclose(out[:, 3:, :], a[:, : n - 3, :], atol=1e-5)
    np.testing.assert_allclose(out[:, :3, :], 0, atol=1e-5)  # outside the moving field of view


def test_resample_png_resizes_and_rejects_mixed_dims():
    mov = ImageRecord(np.arange(16, dtype=np.float32).reshape(4, 4), np.eye(4), (1.0, 1.0), "m.png", "png")
    ref = ImageRecord(np.zeros((7, 7), np.float32), np.eye(4), (1.0, 1.0), "f.png", "png")
    out = resample_to_reference(mov, ref)
    assert out.shape == (7, 7)
    # align_corners resize: corners kept, centre of a linear ramp is its mean
    assert out[0, 0] == pytest.approx(0.0) and out[-1, -1] == pytest.approx(15.0)
    assert out[3, 3] == pytest.approx(7.5)
    vol = ImageRecord(np.zeros((4, 4, 4), np.float32), np.eye(4), (1.0, 1.0, 1.0), "v.nii.gz", "nifti")
    with pytest.raises(ValueError) as ei:
        resample_to_reference(mov, vol)
    assert "m.png" in str(ei.value) and "v.nii.gz" in str(ei.value)


@pytest.mark.parametrize("n,m", [(8, 15), (16, 8), (9, 17)])
def test_resize_field_scales_constant_displacement(n, m):
    d = 2.0
    ddf = torch.zeros(1, 3, n, n + 2, n)
    ddf[:, 0] = d
    ddf[:, 1] = -d
    out = resize_field(ddf, (m, m, n))
    assert out.shape == (1, 3, m, m, n)
    torch.testing.assert_close(out[:, 0], torch.full_like(out[:, 0], d * (m - 1) / (n - 1)))
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], -d * (m - 1) / (n + 1)))
    torch.testing.assert_close(out[:, 2], torch.zeros_like(out[:, 2]))


def test_resize_field_maps_same_physical_displacement_2d():
    """A linear field u(i) = a*i (voxels) resampled to a grid twice as fine stays the same map."""
    n, m = 9, 17
    i = torch.arange(n, dtype=torch.float32)
    ddf = torch.zeros(1, 2, n, n)
    ddf[0, 0] = 0.25 * i[:, None]
    out = resize_field(ddf, (m, m))
    k = torch.arange(m, dtype=torch.float32)
    # fine voxel k is coarse position k*(n-1)/(m-1); displacement scales by (m-1)/(n-1)
    expected = 0.25 * k[:, None] * (n - 1) / (m - 1) * (m - 1) / (n - 1)
    torch.testing.assert_close(out[0, 0], expected.expand(m, m), atol=1e-5, rtol=1e-5)


def test_resize_field_errors_and_noop():
    ddf = torch.randn(1, 3, 4, 4, 4)
    assert resize_field(ddf, (4, 4, 4)) is ddf
    with pytest.raises(ValueError):
        resize_field(ddf, (8, 8))
    with pytest.raises(ValueError):
        resize_field(torch.randn(1, 2, 4, 4, 4), (8, 8, 8))


def test_resize_image_noop_and_modes():
    x = torch.randn(1, 1, 6, 6, 6)
    assert resize_image(x, (6, 6, 6)) is x
    lab = torch.tensor([[[[0.0, 1.0], [2.0, 1.0]]]])
    up = resize_image(lab, (4, 4), label=True)
    assert set(up.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert up.shape == (1, 1, 4, 4)
    ramp = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1).expand(1, 1, 5, 3).contiguous()
    out = resize_image(ramp, (9, 3))
    torch.testing.assert_close(out[0, 0, :, 0], torch.arange(9, dtype=torch.float32) / 2)


@pytest.mark.parametrize("how", ["flip_x", "swap_xy"])
def test_other_orientation_lands_on_reference(tmp_path, hippo_img, save_nifti, how):
    """The same volume stored flipped (LAS) or with axes swapped (ARS) resamples back onto the RAS grid exactly."""
    F = read_image(hippo_img[0])
    a = F.array
    if how == "flip_x":
        arr, aff = a[::-1].copy(), np.eye(4)
        aff[0, 0], aff[0, 3] = -1.0, 63.0
    else:
        arr, aff = np.transpose(a, (1, 0, 2)).copy(), np.eye(4)[:, [1, 0, 2, 3]]
    M = read_image(save_nifti(tmp_path / f"{how}.nii.gz", arr, aff))
    assert M.affine[0, 0] != 1.0
    np.testing.assert_allclose(resample_to_reference(M, F), a, atol=1e-3)


def _smooth_field(shape, amp, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(shape)
    coarse = torch.randn(1, n, *[4] * n, generator=g) * amp
    mode = "bilinear" if n == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True)


def _linear_field(shape, a, b):
    """``u(x) = a x + b`` on the voxel grid ``shape``: ``(1, N, *shape)``."""
    pos = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"))
    return (torch.einsum("ij,j...->i...", a, pos) + b.view(-1, *[1] * len(shape)))[None]


@pytest.mark.parametrize("shape", [(40, 48), (24, 28, 20)])
def test_compose_ddf_of_affine_fields_is_exact(shape):
    """Two linear fields compose to ``r(x) + u(x + r(x)) = (A + B + AB) x + (Ac + b + c)``; linear
    sampling of a linear field is exact, so away from the border the composition is too."""
    n = len(shape)
    g = torch.Generator().manual_seed(0)
    a, b = 0.05 * torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    bm, c = 0.05 * torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    u, r = _linear_field(shape, a, b), _linear_field(shape, bm, c)
    expected = _linear_field(shape, a + bm + a @ bm, a @ c + b + c)
    inner = (slice(None), slice(None)) + tuple(slice(6, s - 6) for s in shape)  # x + r(x) stays inside
    torch.testing.assert_close(compose_ddf(u.float(), r.float())[inner], expected.float()[inner], rtol=0, atol=1e-4)
    assert (u + r - expected)[inner].abs().max() > 0.05  # the plain sum is not the composition


@pytest.mark.parametrize("shape", [(40, 48), (24, 28, 20)])
def test_compose_ddf_warps_like_warping_twice(shape):
    """Warping a smooth image once by the composed field is closer to warping it by ``ddf`` then by
    ``residual`` than warping by their sum is (what is left is the second interpolation's error)."""
    n = len(shape)
    pos = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    image = torch.sin(sum((k + 1) * p for k, p in enumerate(pos)) / 7.0)[None, None]
    u, r = _smooth_field(shape, 1.5, 1), _smooth_field(shape, 1.0, 2)
    warp = Warp(mode="bilinear", padding_mode="border")
    twice = warp(warp(image, u), r)
    inner = (slice(None), slice(None)) + tuple(slice(5, s - 5) for s in shape)
    err_once = (warp(image, compose_ddf(u, r)) - twice)[inner].abs().mean()
    err_sum = (warp(image, u + r) - twice)[inner].abs().mean()
    assert err_once < 0.5 * err_sum and err_once < 0.02
    assert compose_ddf(u, r).shape == (1, n, *shape)


def test_compose_ddf_constant_fields_add_and_identity():
    u = torch.zeros(1, 3, 6, 7, 8)
    u[:, 0] = 1.5
    r = torch.zeros_like(u)
    r[:, 2] = -0.5
    c = compose_ddf(u, r)
    torch.testing.assert_close(c[:, 0], torch.full_like(c[:, 0], 1.5))
    torch.testing.assert_close(c[:, 2], torch.full_like(c[:, 2], -0.5))
    torch.testing.assert_close(compose_ddf(u, torch.zeros_like(u)), u)
    torch.testing.assert_close(compose_ddf(torch.zeros_like(u), r), r)


def test_compose_ddf_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2, 8, 8\) and \(1, 2, 8, 9\)"):
        compose_ddf(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match="compose_ddf"):
        compose_ddf(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
