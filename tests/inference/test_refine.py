"""Label-free refinement of the field (morphzoo.inference.refine.FieldRefiner)."""

from __future__ import annotations

import inspect

import pytest
import torch
from monai.networks.blocks import Warp

from morphzoo.inference import FieldRefiner, Registrar, identity_registrar
from morphzoo.transforms.io import ImageRecord
from tests.inference.test_prealign import blobs


def smooth_field(size, amplitude: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(size)
    coarse = torch.randn(1, n, *[4] * n, generator=g) * amplitude
    mode = "bilinear" if n == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=size, mode=mode, align_corners=True)


@pytest.mark.parametrize("size", [(48, 48), (24, 24, 24)])
@pytest.mark.parametrize("image_loss", ["mse", "lncc", "mind"])
def test_refinement_lowers_its_loss_and_improves_alignment(size, image_loss: str) -> None:
    moving = blobs(size, seed=2)
    truth = smooth_field(size, 2.0)
    fixed = Warp(mode="bilinear", padding_mode="border")(moving, truth)
    start = torch.zeros(1, len(size), *size)
    ref = FieldRefiner(len(size), steps=60, learning_rate=0.2, image_loss=image_loss, reg_weight=0.01, grid_factor=2, patience=100)
    out = ref(moving, fixed, start)
    assert ref.last_losses[-1] < 0.7 * ref.last_losses[0], ref.last_losses[::10]
    warp = Warp(mode="bilinear", padding_mode="border")
    mse_before = ((moving - fixed) ** 2).mean()
    mse_after = ((warp(moving, out) - fixed) ** 2).mean()
    if image_loss != "mind":  # MIND matches structure, not intensities: judged by the field below
        assert mse_after < 0.5 * mse_before, f"image MSE {mse_before:.5f} -> {mse_after:.5f}"
    content = fixed[:, 0] > 0.3  # the field is identifiable where the image has structure
    before = (start - truth).norm(dim=1)[content].mean()
    after = (out - truth).norm(dim=1)[content].mean()
    assert after < 0.8 * before, f"field error on the image content {before:.3f} -> {after:.3f} voxels"


def test_refinement_starts_from_the_given_field_and_zero_steps_keep_it() -> None:
    size = (32, 32)
    moving, fixed = blobs(size, seed=1), blobs(size, seed=2)
    u0 = smooth_field(size, 1.0, seed=3)
    assert torch.equal(FieldRefiner(2, steps=0)(moving, fixed, u0), u0)
    ref = FieldRefiner(2, steps=5)
    out = ref(moving, fixed, u0)
    assert ref.last_losses[0] == pytest.approx(float(ref.loss(*[torch.nn.functional.adaptive_avg_pool2d(x, (16, 16)) for x in (moving, fixed)], __import__("morphzoo").transforms.resize_field(u0, (16, 16)))), rel=1e-5)
    assert min(ref.last_losses) <= ref.last_losses[0]  # the best field seen is returned: never above the start
    assert out.shape == u0.shape


def test_refinement_has_no_way_to_read_labels() -> None:
    """The stage takes the two images and a field only; in the Registrar its result does not depend on
    the moving or fixed label given for scoring."""
    assert list(inspect.signature(FieldRefiner.__call__).parameters) == ["self", "moving", "fixed", "ddf"]
    size = (32, 40)
    mov = ImageRecord(blobs(size, seed=1)[0, 0].numpy(), torch.eye(4).numpy(), (1.0, 1.0), "m.png", "png")
    fix = ImageRecord(blobs(size, seed=2)[0, 0].numpy(), torch.eye(4).numpy(), (1.0, 1.0), "f.png", "png")
    reg = identity_registrar(2, labels=[0, 1])
    reg.refine = FieldRefiner(2, steps=10)
    lab_a = ImageRecord((mov.array > 0.3).astype("int16"), mov.affine, mov.spacing, "a.png", "png")
    lab_b = ImageRecord((mov.array > 0.7).astype("int16"), mov.affine, mov.spacing, "b.png", "png")
    r1 = reg.register_records(mov, fix, lab_a, lab_a, distances=False)
    r2 = reg.register_records(mov, fix, lab_b, lab_b, distances=False)
    r3 = reg.register_records(mov, fix, distances=False)
    assert (r1.ddf == r2.ddf).all() and (r1.ddf == r3.ddf).all()
    assert abs(r1.ddf).max() > 0  # the stage did move the field: the check can fail
    assert "time_refine_ms" in r1.metrics


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(B, 2, \*S\) field"):
        FieldRefiner(2)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("size", [(32, 32, 32), (3, 5, 7), (80, 120), (4, 9)])
def test_box_mean3_matches_pooling_without_padding(size):
    from morphzoo.inference.refine import box_mean3

    x = torch.randn(2, len(size), *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pool = torch.nn.functional.avg_pool3d if len(size) == 3 else torch.nn.functional.avg_pool2d
    expected = pool(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    assert torch.allclose(box_mean3(x, range(2, x.ndim)), expected, atol=1e-12)


def test_box_mean3_on_axes_shorter_than_the_window():
    from morphzoo.inference.refine import box_mean3

    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # (1, 1, 2, 2): every window holds the whole axis
    assert torch.equal(box_mean3(x, (2, 3)), torch.full_like(x, 4.0))
    assert torch.equal(box_mean3(torch.ones(1, 1, 1, 5), (2, 3)), torch.ones(1, 1, 1, 5))
