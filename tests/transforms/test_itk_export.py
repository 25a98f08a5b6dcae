"""morphzoo.transforms.itk_export: the written transform.h5 (SimpleITK) and warp_ants.nii.gz +
affine_ants.mat (antspyx) reproduce the bundle's own warped image and label on real pairs whose
headers are not trivial, in 3D and 2D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphzoo.inference import Registrar
from morphzoo.transforms.itk_export import split_affine_field

sitk = pytest.importorskip("SimpleITK")


def _rotation_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


HEADERS = {
    # RAS, anisotropic voxels, shifted origin
    "ras_anisotropic": np.diag([1.0, 1.1, 0.9]),
    # LPS-like axes (x, y flipped), 15-degree rotation, anisotropic voxels
    "lps_rotated": np.diag([-1.0, -1.0, 1.0]) @ _rotation_z(15.0) @ np.diag([1.0, 1.1, 0.9]),
}


def _smooth_field(scale: float):
    def field_fn(m, f):
        n = m.shape[2:]
        g = torch.meshgrid(*[torch.linspace(0, np.pi, s) for s in n], indexing="ij")
        comps = [2.0 * torch.sin(g[1]), -1.5 * torch.sin(g[0])] + ([torch.cos(g[0])] if len(n) == 3 else [])
        return scale * torch.stack(comps)[None]

    return field_fn


def _theta(n: int) -> torch.Tensor:
    a, b = np.cos(0.2), np.sin(0.2)
    if n == 2:
        return torch.tensor([[[a, -b, 0.05], [b, a, -0.03]]], dtype=torch.float32)
    return torch.tensor([[[a, -b, 0.0, 0.05], [b, a, 0.0, -0.03], [0.0, 0.0, 1.05, 0.02]]], dtype=torch.float32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    fg = b > 0
    return 2.0 * float(np.sum((a == b) & fg)) / float(np.sum(a > 0) + np.sum(fg))


def _inside_moving(out, mov_img, fixed_affine, shape) -> np.ndarray:
    """Fixed voxels whose mapped point lies at least one voxel inside the moving image (tools differ
    in how they treat the last half voxel of a field of view)."""
    import nibabel as nib

    ddf = np.moveaxis(np.asarray(nib.load(str(out / "ddf.nii.gz")).dataobj)[..., 0, :], -1, 0)
    vox = np.linalg.inv(mov_img.affine) @ fixed_affine
    pos = np.indices(shape).astype(np.float64) + ddf
    c = np.einsum("ij,j...->i...", vox[:3, :3], pos) + vox[:3, 3].reshape(3, 1, 1, 1)
    lim = np.array(mov_img.shape, dtype=np.float64).reshape(3, 1, 1, 1) - 2.0
    return np.all((c >= 1.0) & (c <= lim), axis=0)


@pytest.mark.parametrize("header", sorted(HEADERS))
def test_itk_and_ants_files_reproduce_the_warped_outputs_3d(tmp_path, hippo_img, hippo_img2, save_nifti, header):
    import nibabel as nib

    (mov_path, mlab_path), (fix_path, _) = hippo_img, hippo_img2
    fix_img = nib.load(str(fix_path))
    aff = np.eye(4)
    aff[:3, :3] = HEADERS[header]
    centre = np.full(3, 31.5)  # keep the two fields of view overlapping
    aff[:3, 3] = fix_img.affine[:3, :3] @ centre + fix_img.affine[:3, 3] + np.array([3.0, -2.0, 1.5]) - aff[:3, :3] @ centre
    fixed = save_nifti(tmp_path / "fixed.nii.gz", np.asarray(fix_img.dataobj).astype(np.float32), aff)
    out = tmp_path / "out"
    reg = Registrar(None, 3, labels=[0, 1, 2], device="cpu", field_fn=_smooth_field(1.0), prealign=lambda m, f: _theta(3))
    reg.register_files(mov_path, fixed, out, moving_label=mlab_path)
    ours = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)
    ours_lab = np.asarray(nib.load(str(out / "warped_label.nii.gz")).dataobj)
    inside = _inside_moving(out, nib.load(str(mov_path)), aff, ours.shape)
    assert inside.mean() > 0.5

    fixed_s, mov_s, lab_s = sitk.ReadImage(str(fixed)), sitk.ReadImage(str(mov_path), sitk.sitkFloat32), sitk.ReadImage(str(mlab_path))
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    w = sitk.GetArrayFromImage(sitk.Resample(mov_s, fixed_s, tx, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)
    wl = sitk.GetArrayFromImage(sitk.Resample(lab_s, fixed_s, tx, sitk.sitkNearestNeighbor, 0)).transpose(2, 1, 0)
    assert np.corrcoef(w[inside], ours[inside])[0, 1] >= 0.99
    assert _dice(wl, ours_lab) >= 0.98

    ants = pytest.importorskip("ants")
    transforms = [str(out / "warp_ants.nii.gz"), str(out / "affine_ants.mat")]
    fa, ma, la = ants.image_read(str(fixed)), ants.image_read(str(mov_path)), ants.image_read(str(mlab_path))
    wa = ants.apply_transforms(fa, ma, transforms, interpolator="linear").numpy()
    wla = ants.apply_transforms(fa, la, transforms, interpolator="nearestNeighbor").numpy()
    assert np.corrcoef(wa[inside], ours[inside])[0, 1] >= 0.99
    assert _dice(wla, ours_lab) >= 0.98


def test_itk_transform_reproduces_a_2d_png_pair(tmp_path, hc18_images):
    import nibabel as nib

    mov, fix = hc18_images / "000_HC.png", hc18_images / "001_HC.png"
    out = tmp_path / "out"
    Registrar(None, 2, device="cpu", field_fn=_smooth_field(2.0), prealign=lambda m, f: _theta(2)).register_files(mov, fix, out)
    ours = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)
    tx = sitk.ReadTransform(str(out / "transform.h5"))
    w = sitk.GetArrayFromImage(
        sitk.Resample(sitk.ReadImage(str(mov), sitk.sitkFloat32), sitk.ReadImage(str(fix), sitk.sitkFloat32), tx, sitk.sitkLinear, 0.0)
    )
    inner = (slice(4, -4), slice(4, -4))
    assert w.shape == ours.shape
    assert np.corrcoef(w[inner].ravel(), ours[inner].ravel())[0, 1] >= 0.99


def test_split_affine_field_inverts_the_composition():
    from morphzoo.transforms.affine import compose_affine_field, theta_to_voxel

    theta = _theta(2).double()
    u = 0.5 * torch.randn(1, 2, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = compose_affine_field(theta, u)[0].numpy()
    a_vox = theta_to_voxel(theta, (12, 10))[0].numpy()
    np.testing.assert_allclose(split_affine_field(full, a_vox), u[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(split_affine_field(full, None), full)


def _zero_field(m, f):
    return torch.zeros(m.shape[0], m.ndim - 2, *m.shape[2:], dtype=m.dtype)


@pytest.mark.parametrize("suffix", [".mat", ".txt"])
def test_initial_transform_is_honoured(tmp_path, hippo_img, save_nifti, suffix):
    """A pair made by moving a real image with a known affine T registers to near identity when T
    is given as the initial transform (ANTs .mat or ITK .txt), and transform.h5 carries T back."""
    import nibabel as nib

    from morphzoo.inference import RegistrationRunner

    fix_path = hippo_img[0]
    fixed_s = sitk.ReadImage(str(fix_path), sitk.sitkFloat32)
    t = sitk.AffineTransform(3)
    t.SetMatrix((np.diag([1.0, 1.08, 0.95]) @ _rotation_z(10.0)).ravel().tolist())
    t.SetTranslation((2.5, -1.5, 1.0))
    t.SetCenter(fixed_s.TransformContinuousIndexToPhysicalPoint([31.5, 31.5, 31.5]))
    moving_s = sitk.Resample(fixed_s, fixed_s, t.GetInverse(), sitk.sitkLinear, 0.0)  # moving(T(p)) = fixed(p)
    mov_path = tmp_path / "moving.nii.gz"
    sitk.WriteImage(moving_s, str(mov_path))
    init = tmp_path / f"init{suffix}"
    sitk.WriteTransform(t, str(init))

    direct = sitk.GetArrayFromImage(sitk.Resample(moving_s, fixed_s, t, sitk.sitkLinear, 0.0)).transpose(2, 1, 0)

    def corr(out, ref=None):
        w = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)
        f = np.asarray(nib.load(str(fix_path)).dataobj) if ref is None else ref
        inner = (slice(8, -8),) * 3
        return np.corrcoef(w[inner].ravel(), f[inner].ravel())[0, 1]

    reg = Registrar(None, 3, device="cpu", field_fn=_zero_field)
    RegistrationRunner(reg, str(tmp_path / "with"), moving=str(mov_path), fixed=str(fix_path), initial_transform=str(init)).run()
    RegistrationRunner(reg, str(tmp_path / "without"), moving=str(mov_path), fixed=str(fix_path)).run()
    assert corr(tmp_path / "with", direct) > 0.999  # = resampling the moving image through T once
    assert corr(tmp_path / "with") > 0.97 > corr(tmp_path / "without") + 0.05  # back onto the fixed image
    back = [tx for tx in [sitk.ReadTransform(str(tmp_path / "with" / "transform.h5"))]][0]
    affine = sitk.CompositeTransform(back).GetNthTransform(0)
    point = (10.0, -20.0, 30.0)
    np.testing.assert_allclose(affine.TransformPoint(point), t.TransformPoint(point), atol=1e-3)


def test_initial_transform_errors_name_the_file(tmp_path, hippo_img):
    from morphzoo.inference import RegistrationRunner

    reg = Registrar(None, 3, device="cpu", field_fn=_zero_field)
    missing = tmp_path / "nope.mat"
    with pytest.raises(SystemExit) as e:
        RegistrationRunner(reg, str(tmp_path / "o"), moving=str(hippo_img[0]), fixed=str(hippo_img[0]), initial_transform=str(missing)).run()
    assert e.value.code == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("not a transform\n")
    with pytest.raises(SystemExit):
        RegistrationRunner(reg, str(tmp_path / "o"), moving=str(hippo_img[0]), fixed=str(hippo_img[0]), initial_transform=str(bad)).run()
    two_d = tmp_path / "two_d.txt"
    sitk.WriteTransform(sitk.AffineTransform(2), str(two_d))
    with pytest.raises(SystemExit):
        RegistrationRunner(reg, str(tmp_path / "o"), moving=str(hippo_img[0]), fixed=str(hippo_img[0]), initial_transform=str(two_d)).run()
    with pytest.raises(SystemExit):  # an initial transform belongs to one pair
        RegistrationRunner(reg, str(tmp_path / "o"), items=[], initial_transform=str(two_d)).run()
    assert not (tmp_path / "o").exists()
