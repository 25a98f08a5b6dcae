"""Validated reading and atomic writing (morphzoo.transforms.io) on real and crafted files."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from morphzoo.data.labels import unexpected_label_counts
from PIL import Image

from morphzoo.transforms.io import (
    ImageRecord,
    InputError,
    atomic_output_dir,
    check_outputs_free,
    read_image,
    read_label,
    write_nifti_like,
    write_png,
)


# ----------------------------------------------------------------------------- reading real files
def test_read_real_nifti(hippo_img):
    img_path, lab_path = hippo_img
    ref = nib.load(str(img_path))
    rec = read_image(img_path, spatial_dims=3)
    assert rec.kind == "nifti"
    assert rec.shape == (64, 64, 64)
    assert rec.array.dtype == np.float32
    np.testing.assert_array_equal(rec.array, np.asarray(ref.dataobj, dtype=np.float32))
    np.testing.assert_allclose(rec.affine, ref.affine)
    assert rec.spacing == (1.0, 1.0, 1.0)
    assert rec.path == img_path
    lab = read_label(lab_path, allowed=[0, 1, 2], spatial_dims=3)
    assert lab.array.dtype == np.int16
    assert set(np.unique(lab.array).tolist()) == {0, 1, 2}


def test_read_real_png_and_label(hc18_images):
    img_path = hc18_images / "000_HC.png"
    with Image.open(img_path) as im:
        raw = np.asarray(im)
    rec = read_image(img_path, spatial_dims=2, spacing=(0.5, 0.25))
    assert rec.kind == "png" and rec.header is None
    assert rec.shape == raw.shape[:2]
    np.testing.assert_array_equal(rec.array, raw.astype(np.float32))
    assert rec.spacing == (0.5, 0.25)
    np.testing.assert_allclose(rec.affine, np.diag([0.5, 0.25, 1.0, 1.0]))
    # the HC18 masks are RGB 0/255: channel 0 binarised to {0, 1}
    lab = read_label(hc18_images / "000_HC_Annotation.png", allowed=[0, 1], spatial_dims=2)
    assert lab.shape == rec.shape
    assert set(np.unique(lab.array).tolist()) == {0, 1}


# ----------------------------------------------------------------------------- bad input
def _assert_input_error(path, fragment, **kwargs):
    with pytest.raises(InputError) as ei:
        read_image(path, **kwargs)
    msg = str(ei.value)
    assert str(path) in msg, msg
    assert fragment.lower() in msg.lower(), msg
    return msg


def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.nii.gz", "does not exist")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    _assert_input_error(p, "empty")


def test_truncated_nifti(tmp_path, hippo_img):
    data = hippo_img[0].read_bytes()
    p = tmp_path / "truncated.nii.gz"
    p.write_bytes(data[: len(data) // 2])
    _assert_input_error(p, "truncated")


@pytest.mark.parametrize("kind", ["plain_nii", "png", "not_gzip"])
def test_other_corrupt_files(tmp_path, hippo_img, hc18_images, kind):
    if kind == "plain_nii":
        nib.save(nib.load(str(hippo_img[0])), str(tmp_path / "full.nii"))
        data, p = (tmp_path / "full.nii").read_bytes(), tmp_path / "half.nii"
        p.write_bytes(data[: len(data) // 2])
    elif kind == "png":
        data, p = (hc18_images / "000_HC.png").read_bytes(), tmp_path / "half.png"
        p.write_bytes(data[: len(data) // 2])
    else:
        p = tmp_path / "text.nii.gz"
        p.write_text("not an image")
    _assert_input_error(p, "corrupt")


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "image.mha"
    p.write_bytes(b"abc")
    _assert_input_error(p, "unsupported")


def test_nan_voxel(tmp_path, save_nifti):
    a = np.ones((8, 8, 8), np.float32)
    a[3, 4, 5] = np.nan
    p = save_nifti(tmp_path / "nan.nii.gz", a)
    msg = _assert_input_error(p, "NaN")
    assert "1 NaN" in msg


def test_four_d_with_two_channels(tmp_path, save_nifti):
    p = save_nifti(tmp_path / "two_channels.nii.gz", np.zeros((8, 8, 8, 2), np.float32))
    msg = _assert_input_error(p, "channels")
    assert "(8, 8, 8, 2)" in msg


def test_trailing_singleton_is_dropped(tmp_path, save_nifti):
    a = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8, 1)
    rec = read_image(save_nifti(tmp_path / "single.nii.gz", a), spatial_dims=3)
    assert rec.shape == (8, 8, 8)
    np.testing.assert_array_equal(rec.array, a[..., 0])


def test_rgb_png_rejected(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red: channels differ
    p = tmp_path / "colour.png"
    Image.fromarray(rgb).save(p)
    _assert_input_error(p, "colour")
    # a grey image stored as RGB (identical channels) is accepted
    grey = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None], 3, axis=-1)
    q = tmp_path / "grey_rgb.png"
    Image.fromarray(grey).save(q)
    np.testing.assert_array_equal(read_image(q).array, grey[..., 0].astype(np.float32))


def test_2d_file_when_3d_required(tmp_path, save_nifti):
    p = save_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32))
    msg = _assert_input_error(p, "2D", spatial_dims=3)
    assert "spatial_dims=3" in msg
    png = tmp_path / "flat.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    _assert_input_error(png, "2D", spatial_dims=3)


def test_read_label_values_outside_allowed(tmp_path, save_nifti):
    a = np.zeros((8, 8, 8), np.int16)
    a[0, 0, :3] = 1
    a[1, 1, :2] = 7
    a[2, 2, 0] = -2
    p = save_nifti(tmp_path / "lab.nii.gz", a)
    with pytest.raises(InputError) as ei:
        read_label(p, allowed=[0, 1])
    msg = str(ei.value)
    assert str(p) in msg
    assert "7 (2 voxels)" in msg and "-2 (1 voxels)" in msg
    assert unexpected_label_counts(a, [0, 1]) == {-2: 1, 7: 2}
    assert unexpected_label_counts(a, [-2, 0, 1, 7]) == {}
    # without `allowed` the map is read as is
    np.testing.assert_array_equal(read_label(p).array, a)


def test_read_png_label_binarisation(tmp_path):
    # a multi-class PNG label map (values 0..3) keeps its values
    m = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    Image.fromarray(m).save(tmp_path / "classes.png")
    np.testing.assert_array_equal(read_label(tmp_path / "classes.png", allowed=[0, 1, 2, 3]).array, m)
    # a 0/255 mask (with anti-aliased edge values) is binarised at 127
    mask = np.array([[0, 255, 200], [100, 255, 0]], np.uint8)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_label(tmp_path / "mask.png", allowed=[0, 1]).array, [[0, 1, 1], [0, 1, 0]])
    # unless asked not to: then 255 is an undeclared value
    with pytest.raises(InputError, match="255"):
        read_label(tmp_path / "mask.png", allowed=[0, 1], binarize_png=False)


def test_read_label_non_integer(tmp_path, save_nifti):
    p = save_nifti(tmp_path / "frac.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        read_label(p)


# ----------------------------------------------------------------------------- writing
def _header_codes(path):
    h = nib.load(str(path)).header
    return int(h["qform_code"]), int(h["sform_code"])


def test_write_nifti_like_roundtrip_real(tmp_path, hippo_img):
    src = hippo_img[0]
    ref = read_image(src)
    out = write_nifti_like(ref.array * 2.0, ref, tmp_path / "out.nii.gz")
    a, b = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    assert _header_codes(out) == _header_codes(src)
    assert nib.aff2axcodes(b.affine) == nib.aff2axcodes(a.affine)
    np.testing.assert_array_equal(np.asarray(b.dataobj), ref.array * 2.0)
    assert b.header.get_zooms() == a.header.get_zooms()
    # no temporary file left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


@pytest.mark.parametrize("codes", [(1, 1), (0, 2), (2, 0)])
def test_write_nifti_like_roundtrip_oblique_flipped(tmp_path, codes):
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-1.5, 0.8, 2.0])  # rotated, x flipped
    aff = np.eye(4)
    aff[:3, :3] = rot
    aff[:3, 3] = [12.0, -40.0, 7.5]
    img = nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 5)).astype(np.float32), aff)
    img.set_qform(aff, code=codes[0])
    img.set_sform(aff, code=codes[1])
    src = tmp_path / "oblique.nii.gz"
    nib.save(img, str(src))
    ref = read_image(src)
    np.testing.assert_allclose(ref.affine, aff, atol=1e-5)
    out = write_nifti_like(ref.array, ref, tmp_path / "copy.nii.gz")
    b = nib.load(str(out))
    np.testing.assert_allclose(b.affine, aff, atol=1e-5)
    assert _header_codes(out) == codes
    assert nib.aff2axcodes(b.affine) == nib.aff2axcodes(aff)
    assert nib.aff2axcodes(aff)[0] != "R"  # the flip is really there
    np.testing.assert_array_equal(np.asarray(b.dataobj), ref.array)


def test_write_nifti_like_header_without_codes(tmp_path):
    """A header with neither qform nor sform gets both codes 1 with the affine it was read with."""
    img = nib.Nifti1Image(np.arange(120, dtype=np.float32).reshape(4, 5, 6), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    src = tmp_path / "nocodes.nii.gz"
    nib.save(img, str(src))
    assert _header_codes(src) == (0, 0)
    ref = read_image(src)
    out = write_nifti_like(ref.array, ref, tmp_path / "copy.nii.gz")
    assert _header_codes(out) == (1, 1)
    np.testing.assert_allclose(nib.load(str(out)).affine, ref.affine, atol=1e-6)
    assert ref.spacing == (2.0, 3.0, 4.0)


def test_write_vector_field(tmp_path, hippo_img):
    ref = read_image(hippo_img[0])
    ddf = np.stack([np.full(ref.shape, v, np.float32) for v in (1.0, -2.0, 0.5)])
    out = write_nifti_like(ddf, ref, tmp_path / "ddf.nii.gz", vector=True)
    b = nib.load(str(out))
    assert b.shape == (64, 64, 64, 1, 3)
    assert b.header.get_intent()[0] == "vector"
    data = np.asarray(b.dataobj)
    np.testing.assert_array_equal(data[..., 0, 1], ddf[1])
    np.testing.assert_allclose(b.affine, ref.affine)
    # a 2D field on a PNG reference: (H, W, 1, 1, 2)
    png_ref = ImageRecord(np.zeros((5, 6), np.float32), np.diag([0.5, 0.5, 1, 1]), (0.5, 0.5), tmp_path / "x.png", "png")
    field2 = np.stack([np.full((5, 6), 3.0, np.float32), np.arange(30, dtype=np.float32).reshape(5, 6)])
    out2 = write_nifti_like(field2, png_ref, tmp_path / "ddf2.nii.gz", vector=True)
    b2 = nib.load(str(out2))
    assert b2.shape == (5, 6, 1, 1, 2)
    np.testing.assert_array_equal(np.asarray(b2.dataobj)[:, :, 0, 0, 1], field2[1])
    np.testing.assert_allclose(b2.affine, np.diag([0.5, 0.5, 1, 1]))
    # a scalar output is not marked as a vector
    out3 = write_nifti_like(ref.array, ref, tmp_path / "scalar.nii.gz")
    assert nib.load(str(out3)).header.get_intent()[0] == "none"


def test_write_png_scaling(tmp_path):
    a = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    p = write_png(a, tmp_path / "a.png")
    with Image.open(p) as im:
        got = np.asarray(im)
    np.testing.assert_array_equal(got, np.array([[0, 64], [128, 255]], np.uint8))
    with Image.open(write_png(a, tmp_path / "labels.png", scale=False)) as im:  # a label map keeps its values
        np.testing.assert_array_equal(np.asarray(im), np.array([[0, 1], [2, 4]], np.uint8))
    with pytest.raises(ValueError):
        write_png(np.zeros((2, 2, 2)), tmp_path / "b.png")


def test_check_outputs_free(tmp_path):
    check_outputs_free(tmp_path / "not_yet", ["warped.nii.gz"])  # a missing folder is free
    (tmp_path / "warped.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError) as ei:
        check_outputs_free(tmp_path, ["ddf.nii.gz", "warped.nii.gz"], overwrite=False)
    assert "warped.nii.gz" in str(ei.value) and "ddf.nii.gz" not in str(ei.value)
    check_outputs_free(tmp_path, ["warped.nii.gz"], overwrite=True)
    check_outputs_free(tmp_path, ["ddf.nii.gz"], overwrite=False)
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        check_outputs_free(f, ["a"], overwrite=True)


def test_atomic_output_dir_success_and_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
        (tmp / "b.txt").write_text("b")
        assert not (out / "a.txt").exists()  # nothing visible before the body ends
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(failed) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert not failed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    # a failure inside an existing output folder keeps its old content
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "a"
    assert os.listdir(tmp_path) == ["out"]


def test_constant_image_is_refused_but_a_constant_label_is_not(tmp_path, save_nifti):
    """An image with no contrast cannot be registered or segmented: refused with the file and the
    value named; an all-background label map is legitimate."""
    p = save_nifti(tmp_path / "const.nii.gz", np.full((8, 8, 8), 3.0, np.float32))
    with pytest.raises(InputError, match=r"const\.nii\.gz: moving image is constant \(every value is 3\)"):
        read_image(p, what="moving image")
    assert read_image(p, allow_constant=True).shape == (8, 8, 8)
    lab = save_nifti(tmp_path / "bg.nii.gz", np.zeros((8, 8, 8), np.int16))
    assert read_label(lab, allowed=[0, 1]).array.max() == 0
