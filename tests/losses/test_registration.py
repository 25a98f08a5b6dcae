"""RegistrationLoss (morphzoo.losses.registration) against analytic values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from morphzoo.losses.registration import RegistrationLoss, make_image_loss, make_regularizer, split_targets


def _pair(smooth_volume, shape=(12, 12, 12), seed=0):
    x = torch.as_tensor(smooth_volume(shape, seed))[None, None]
    return x


def test_identical_images_zero_field_lncc_minimum(smooth_volume):
    x = _pair(smooth_volume)
    targets = torch.cat([x, x], dim=1)
    loss_fn = RegistrationLoss(spatial_dims=3, image_loss="lncc", kernel_size=3, reg_weight=1.0)
    loss = loss_fn(torch.zeros(1, 3, 12, 12, 12), targets)
    # MONAI's LNCC loss is -mean(ncc^2) in [-1, 0]: identical images give its minimum -1
    assert float(loss) == pytest.approx(-1.0, abs=1e-3)
    assert loss_fn.last_terms["similarity"] == pytest.approx(-1.0, abs=1e-3)
    assert loss_fn.last_terms["regularization"] == 0.0
    assert "label_dice" not in loss_fn.last_terms
    # a different image scores higher (worse)
    y = _pair(smooth_volume, seed=5)
    assert float(loss_fn(torch.zeros(1, 3, 12, 12, 12), torch.cat([y, x], dim=1))) > float(loss) + 0.05


def test_identical_images_zero_field_mse_zero(smooth_volume):
    x = torch.as_tensor(smooth_volume((16, 16), 1))[None, None]
    loss_fn = RegistrationLoss(spatial_dims=2, image_loss="mse", regularizer="bending")
    loss = loss_fn(torch.zeros(1, 2, 16, 16), torch.cat([x, x], dim=1))
    assert float(loss) == pytest.approx(0.0, abs=1e-10)  # grid_sample at the identity: float rounding only
    assert set(loss_fn.last_terms) == {"similarity", "regularization"}
    assert loss_fn.last_terms["similarity"] == pytest.approx(0.0, abs=1e-10)
    assert loss_fn.last_terms["regularization"] == 0.0


def test_regularizer_weight_on_linear_field():
    """Diffusion of u = a*x (constant gradient a) is > 0 and scales with reg_weight; bending of a linear field is 0."""
    n = 10
    ramp = torch.arange(n, dtype=torch.float32)
    ddf = torch.zeros(1, 2, n, n)
    ddf[0, 0] = 0.3 * ramp[:, None]
    x = torch.zeros(1, 1, n, n)
    t = torch.cat([x, x], dim=1)
    l1 = RegistrationLoss(2, "mse", "diffusion", reg_weight=1.0)
    l2 = RegistrationLoss(2, "mse", "diffusion", reg_weight=3.0)
    r1, r2 = float(l1(ddf, t)), float(l2(ddf, t))
    assert r1 > 0 and r2 == pytest.approx(3 * r1, rel=1e-6)
    lb = RegistrationLoss(2, "mse", "bending", reg_weight=1.0)
    assert float(lb(ddf, t)) == pytest.approx(0.0, abs=1e-8)


def test_field_undoing_integer_shift_reduces_mse(smooth_volume):
    n, s = 16, 2
    # moving(x) = f(x - s) along axis 0 (computed analytically, no wrap-around); fixed = f
    big = smooth_volume((n + s, n, n), 3)
    fixed = torch.as_tensor(big[s:])[None, None]
    moving = torch.as_tensor(big[:n])[None, None]  # moving[i] = big[i] = fixed[i - s]
    targets = torch.cat([moving, fixed], dim=1)
    loss_fn = RegistrationLoss(3, "mse", reg_weight=0.0)
    zero = float(loss_fn(torch.zeros(1, 3, n, n, n), targets))
    ddf = torch.zeros(1, 3, n, n, n)
    ddf[:, 0] = s  # warped(x) = moving(x + s) = fixed(x)
    undone = float(loss_fn(ddf, targets))
    assert zero > 0.01
    assert undone < 0.25 * zero
    # exact where x + s stays inside the moving grid
    from monai.networks.blocks import Warp

    warped = Warp(mode="bilinear", padding_mode="border")(moving, ddf)
    torch.testing.assert_close(warped[..., : n - s, :, :], fixed[..., : n - s, :, :], atol=1e-5, rtol=1e-5)
    # the wrong direction makes it worse
    assert float(loss_fn(-ddf, targets)) > zero


def test_label_dice_term_and_its_gradient(smooth_volume):
    n = 12
    img = torch.as_tensor(smooth_volume((n, n, n), 2))[None, None]
    mlab = torch.zeros(1, 1, n, n, n)
    mlab[:, :, 3:7, 3:9, 3:9] = 1
    mlab[:, :, 7:9, 3:9, 3:9] = 2
    flab = torch.roll(mlab, shifts=1, dims=2)
    targets = torch.cat([img, img, mlab, flab], dim=1)
    ddf = torch.zeros(1, 3, n, n, n, requires_grad=True)
    loss_fn = RegistrationLoss(3, "mse", reg_weight=1.0, label_weight=0.5, num_labels=3)
    loss = loss_fn(ddf, targets)
    assert "label_dice" in loss_fn.last_terms
    d = loss_fn.last_terms["label_dice"]
    assert 0.0 < d < 1.0  # overlapping but shifted labels
    assert float(loss.detach()) == pytest.approx(0.5 * d, rel=1e-5)  # the image and regulariser terms are 0 here
    (grad,) = torch.autograd.grad(loss, ddf)
    assert grad.abs().sum() > 0  # only the label term can give a gradient at this point
    # identical labels: the Dice term vanishes
    loss_fn(torch.zeros(1, 3, n, n, n), torch.cat([img, img, mlab, mlab], dim=1))
    assert loss_fn.last_terms["label_dice"] == pytest.approx(0.0, abs=1e-4)
    # label_weight=0 (unsupervised): no label term even with labels in the targets
    lf0 = RegistrationLoss(3, "mse", label_weight=0.0, num_labels=3)
    lf0(torch.zeros(1, 3, n, n, n), targets)
    assert "label_dice" not in lf0.last_terms


def test_multiscale_fields_with_scale_weights(smooth_volume):
    n = 8
    mov = torch.as_tensor(smooth_volume((n, n, n), 4))[None, None]
    fix = torch.as_tensor(smooth_volume((n, n, n), 5))[None, None]
    targets = torch.cat([mov, fix], dim=1)
    g = torch.Generator().manual_seed(0)
    f_full = 0.5 * torch.randn(1, 3, n, n, n, generator=g)
    f_half = 0.5 * torch.randn(1, 3, n // 2, n // 2, n // 2, generator=g)
    ms = RegistrationLoss(3, "mse", reg_weight=0.1, scale_weights=[1.0, 0.5])
    total = float(ms([f_full, f_half], targets))
    single = RegistrationLoss(3, "mse", reg_weight=0.1)
    full = float(single(f_full, targets))
    half = float(single(f_half, F.avg_pool3d(targets, 2)))  # coarse field compared with pooled images
    assert total == pytest.approx(full + 0.5 * half, rel=1e-5)
    single(f_full, targets)
    assert ms.last_terms == pytest.approx(single.last_terms, rel=1e-6)  # logged terms: the finest field
    # equal weights by default
    assert float(RegistrationLoss(3, "mse", reg_weight=0.1)([f_full, f_half], targets)) == pytest.approx(full + half, rel=1e-5)
    with pytest.raises(ValueError, match="scale_weights"):
        RegistrationLoss(3, "mse", scale_weights=[1.0])([f_full, f_half], targets)


def test_wrong_channel_count_and_bad_arguments():
    t = torch.zeros(1, 2, 8, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        RegistrationLoss(3, "mse")(torch.zeros(1, 2, 8, 8, 8), t)
    with pytest.raises(ValueError):
        RegistrationLoss(3, "mse")(torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8))  # 3 target channels
    with pytest.raises(ValueError):
        RegistrationLoss(spatial_dims=4)
    with pytest.raises(ValueError):
        make_image_loss("xcorr", 3)
    with pytest.raises(ValueError):
        make_regularizer("elastic")


def test_split_targets():
    t = torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 3, 3)
    m, f, ml, fl = split_targets(t)
    assert [float(x.mean()) for x in (m, f, ml, fl)] == [0.0, 1.0, 2.0, 3.0]
    assert m.shape == (2, 1, 3, 3)
    m, f, ml, fl = split_targets(t[:, :2])
    assert ml is None and fl is None


@pytest.mark.parametrize("name", ["lncc", "ncc", "mse", "mi", "ssim"])
def test_every_image_loss_prefers_identical_images(smooth_volume, name):
    x = torch.as_tensor(smooth_volume((32, 32), 6))
    x = ((x - x.min()) / (x.max() - x.min()))[None, None]
    y = torch.as_tensor(smooth_volume((32, 32), 7))
    y = ((y - y.min()) / (y.max() - y.min()))[None, None]
    loss_fn = RegistrationLoss(2, name, reg_weight=0.0, kernel_size=5)
    zero = torch.zeros(1, 2, 32, 32)
    same, other = float(loss_fn(zero, torch.cat([x, x], 1))), float(loss_fn(zero, torch.cat([y, x], 1)))
    assert same < other - 1e-3
    if name == "ssim":
        assert same == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- global NCC and total variation (Li & Fan)
def test_global_ncc_loss_analytic(smooth_volume):
    x = torch.as_tensor(smooth_volume((10, 12, 8), 8))[None, None]
    ncc = make_image_loss("ncc", 3)
    assert float(ncc(x, x)) == pytest.approx(-1.0, abs=1e-6)  # identical images
    assert float(ncc(3.0 * x + 2.0, x)) == pytest.approx(-1.0, abs=1e-6)  # invariant to affine intensity changes
    assert float(ncc(-x, x)) == pytest.approx(1.0, abs=1e-6)  # negated image: correlation -1
    # a batch averages the items: one identical (-1), one negated (+1)
    assert float(ncc(torch.cat([x, -x]), torch.cat([x, x]))) == pytest.approx(0.0, abs=1e-6)
    # through RegistrationLoss with a zero field: similarity -1, TV 0
    loss_fn = RegistrationLoss(3, image_loss="ncc", regularizer="tv", reg_weight=0.5)
    assert float(loss_fn(torch.zeros(1, 3, 10, 12, 8), torch.cat([x, x], 1))) == pytest.approx(-1.0, abs=1e-5)
    assert loss_fn.last_terms["regularization"] == 0.0


def test_total_variation_analytic():
    tv = make_regularizer("tv")
    # a constant shift has zero total variation
    assert float(tv(torch.full((2, 3, 6, 7, 5), 2.5))) == 0.0
    # linear field D_c(x) = sum_j a_cj x_j: TV = sum_j mean_c |a_cj|
    a = torch.tensor([[0.3, -0.2], [0.0, 0.5]])
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    ddf = torch.stack([a[c, 0] * yy + a[c, 1] * xx for c in range(2)])[None]
    expected = float(a.abs().mean(dim=0).sum())  # (0.3 + 0.0) / 2 + (0.2 + 0.5) / 2 = 0.5
    assert float(tv(ddf)) == pytest.approx(expected, rel=1e-6) and expected == pytest.approx(0.5)
    # L1, not squared: doubling the field doubles TV (diffusion would quadruple)
    assert float(tv(2 * ddf)) == pytest.approx(2 * expected, rel=1e-6)
    # a single-voxel spike in 3D: |h| on each side along each axis, averaged over all difference voxels
    spike = torch.zeros(1, 3, 5, 5, 5)
    spike[0, 0, 2, 2, 2] = 1.0
    assert float(tv(spike)) == pytest.approx(3 * 2 / (3 * 4 * 5 * 5), rel=1e-6)
    with pytest.raises(ValueError, match="field"):
        tv(torch.zeros(1, 2, 4, 4, 4))


def test_zero_scale_weight_skips_that_scale_and_labels_count_at_coarse_scales(smooth_volume):
    """A scale of weight 0 adds nothing (a coarser stage while a finer one trains); with a label
    weight, a coarse field is scored against one-hot labels average-pooled to its grid."""
    n = 8
    mov = torch.as_tensor(smooth_volume((n, n, n), 4))[None, None]
    fix = torch.as_tensor(smooth_volume((n, n, n), 5))[None, None]
    g = torch.Generator().manual_seed(0)
    f_full = 0.5 * torch.randn(1, 3, n, n, n, generator=g)
    f_half = torch.full((1, 3, n // 2, n // 2, n // 2), float("nan"))  # would poison the sum if computed
    loss = RegistrationLoss(3, "mse", reg_weight=0.1, scale_weights=[1.0, 0.0])
    single = RegistrationLoss(3, "mse", reg_weight=0.1)
    targets = torch.cat([mov, fix], dim=1)
    assert float(loss([f_full, f_half], targets)) == pytest.approx(float(single(f_full, targets)), rel=1e-6)
    # coarse-scale label term: identical labels and a zero field give Dice loss 0, a shifted label does not
    lab = torch.zeros(1, 1, n, n, n)
    lab[..., 2:6, 2:6, 2:6] = 1.0
    coarse_only = RegistrationLoss(3, "mse", reg_weight=0.0, label_weight=1.0, num_labels=2, scale_weights=[0.0, 1.0])
    zero_half = torch.zeros(1, 3, n // 2, n // 2, n // 2)
    coarse_only([f_full, zero_half], torch.cat([mov, mov, lab, lab], dim=1))
    assert coarse_only.last_terms["label_dice"] == pytest.approx(0.0, abs=1e-4)
    shifted = torch.roll(lab, 2, dims=2)
    coarse_only([f_full, zero_half], torch.cat([mov, mov, shifted, lab], dim=1))
    assert coarse_only.last_terms["label_dice"] > 0.2


# ---------------------------------------------------------------- FMIRNet's loss: MSE + β(1 − SSIM), summed gradient penalty
@pytest.mark.parametrize("dims,shape", [(2, (3, 2, 40, 33)), (3, (2, 1, 14, 17, 12))])
def test_separable_ssim_equals_monai_ssim_loss(dims, shape):
    from monai.losses import SSIMLoss

    from morphzoo.losses import SeparableSSIMLoss

    g = torch.Generator().manual_seed(dims)
    a = torch.rand(shape, generator=g)
    b = 0.6 * a + 0.4 * torch.rand(shape, generator=g)
    ours, monai = SeparableSSIMLoss(dims)(a, b), SSIMLoss(dims, data_range=1.0)(a, b)
    assert float(ours) == pytest.approx(float(monai), abs=1e-5)
    assert float(SeparableSSIMLoss(dims)(a, a)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        SeparableSSIMLoss(dims)(a, b[:1])


def test_weighted_sum_image_loss_from_its_name():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 24, 24, generator=g), torch.rand(2, 1, 24, 24, generator=g)
    mse, ssim = float(make_image_loss("mse", 2)(a, b)), float(make_image_loss("ssim", 2)(a, b))
    assert float(make_image_loss("mse+0.1*ssim", 2)(a, b)) == pytest.approx(mse + 0.1 * ssim, rel=1e-6)
    assert float(make_image_loss("MSE + ssim", 2)(a, b)) == pytest.approx(mse + ssim, rel=1e-6)
    assert float(make_image_loss("2*mse", 2)(a, b)) == pytest.approx(2 * mse, rel=1e-6)
    with pytest.raises(ValueError, match="'x' of term 'x\\*ssim' is not a number"):
        make_image_loss("mse+x*ssim", 2)
    with pytest.raises(ValueError, match="unknown image loss 'ncx'"):
        make_image_loss("mse+ncx", 2)


def test_summed_diffusion_is_the_mean_times_components_and_interior_voxels_per_sample():
    """A linear field D_c(x) = Σ_j a_cj x_j has central-difference gradient a everywhere: the summed
    penalty of one sample is N' · Σ_cj a_cj², N' the interior voxels; a batch averages samples."""
    a = torch.tensor([[0.3, -0.2], [0.1, 0.5]])
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    ddf = torch.stack([a[c, 0] * yy + a[c, 1] * xx for c in range(2)])[None]
    expected = 7 * 9 * float((a**2).sum())
    assert float(make_regularizer("diffusion_sum")(ddf)) == pytest.approx(expected, rel=1e-5)
    assert float(make_regularizer("diffusion_sum")(torch.cat([ddf, 3 * ddf]))) == pytest.approx(5 * expected, rel=1e-5)
    assert float(make_regularizer("diffusion")(ddf)) == pytest.approx(expected / (2 * 7 * 9), rel=1e-5)
    assert float(make_regularizer("bending_sum")(ddf)) == pytest.approx(0.0, abs=1e-6)  # linear: no bending
    with pytest.raises(ValueError, match="diffusion_sum"):
        make_regularizer("diffusion_mean")
