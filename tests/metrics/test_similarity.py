from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from morphzoo.metrics import mse, ncc_global, nmi, rmse, ssim


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 1, 16, 20), (2, 2, 8, 9, 10)])
def test_ncc_identical_negated_affine(shape):
    a = _rand(*shape)
    torch.testing.assert_close(ncc_global(a, a), torch.ones(shape[0], dtype=torch.float64))
    torch.testing.assert_close(ncc_global(a, -a), -torch.ones(shape[0], dtype=torch.float64))
    torch.testing.assert_close(ncc_global(a, 3 * a + 7), torch.ones(shape[0], dtype=torch.float64))


def test_ncc_matches_pearson_and_constant_is_zero():
    a, b = _rand(2, 1, 12, 12, seed=1), _rand(2, 1, 12, 12, seed=2)
    ref = [np.corrcoef(a[i].ravel().numpy(), b[i].ravel().numpy())[0, 1] for i in range(2)]
    np.testing.assert_allclose(ncc_global(a, b).numpy(), ref, rtol=1e-10)
    const = torch.full_like(a, 4.0)
    out = ncc_global(a, const)
    assert torch.equal(out, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(ncc_global(const, const), torch.zeros(2, dtype=torch.float64))


def test_nmi_identical_is_two():
    a = _rand(2, 1, 32, 32)
    torch.testing.assert_close(nmi(a, a), torch.full((2,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(nmi(a, a, bins=8, value_range=(0.0, 1.0)), torch.full((2,), 2.0, dtype=torch.float64))
    a3 = _rand(1, 1, 10, 10, 10, seed=3)
    assert nmi(a3, a3).item() == pytest.approx(2.0)


def test_nmi_independent_noise_close_to_one():
    a, b = _rand(1, 1, 128, 128, seed=4), _rand(1, 1, 128, 128, seed=5)
    value = nmi(a, b).item()
    assert 1.0 <= value < 1.1  # plug-in bias ~ 31^2 / (2 * 16384) nats of MI
    structured = nmi(a, a + 0.05 * b).item()
    assert structured > 1.5


def test_nmi_hand_computed():
    # bins=2 over [0, 1]: a = 0 0 0 1, b = 0 0 1 1 -> joint (0,0):2 (0,1):1 (1,1):1
    a = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    b = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    h_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_b = math.log(2)
    h_ab = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert nmi(a, b, bins=2).item() == pytest.approx((h_a + h_b) / h_ab, rel=1e-6)
    # exactly independent: (H(A) + H(B)) / H(A, B) = 1
    a = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    b = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(1, 1, 2, 2)
    assert nmi(a, b, bins=2).item() == pytest.approx(1.0, rel=1e-6)


def test_nmi_batch_items_are_independent_and_constant_is_one():
    a = _rand(1, 1, 16, 16, seed=6)
    noise = _rand(1, 1, 16, 16, seed=7)
    batch_a = torch.cat([a, a, torch.zeros_like(a)])
    batch_b = torch.cat([a, noise, torch.zeros_like(a)])
    out = nmi(batch_a, batch_b)
    assert out[0].item() == pytest.approx(2.0)
    assert out[1].item() == pytest.approx(nmi(a, noise).item())
    assert out[2].item() == 1.0 and not torch.isnan(out).any()


def test_mse_rmse():
    a = _rand(2, 1, 6, 7)
    torch.testing.assert_close(mse(a, a + 2), torch.full((2,), 4.0, dtype=torch.float64))
    torch.testing.assert_close(rmse(a, a - 2), torch.full((2,), 2.0, dtype=torch.float64))
    b = a.clone()
    b[1, 0, 0, 0] += 6.0
    torch.testing.assert_close(mse(a, b), torch.tensor([0.0, 36.0 / 42], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(2, 1, 24, 24), (1, 2, 12, 13, 14)])
def test_ssim_identical_is_one(shape):
    a = 100 * _rand(*shape)
    out = ssim(a, a)
    assert out.shape == (shape[0],)
    torch.testing.assert_close(out, torch.ones(shape[0], dtype=torch.float64))
    noisy = a + 30 * _rand(*shape, seed=9)
    assert (ssim(noisy, a) < 0.99).all()


def test_ssim_per_item_range_matches_explicit_range():
    a = _rand(2, 1, 20, 20, seed=10)
    b = a + 0.3 * _rand(2, 1, 20, 20, seed=11)
    b[1] *= 50.0
    a[1] *= 50.0
    out = ssim(a, b)
    for i in range(2):
        rng = (torch.maximum(a[i].max(), b[i].max()) - torch.minimum(a[i].min(), b[i].min())).item()
        assert out[i].item() == pytest.approx(ssim(a[i : i + 1], b[i : i + 1], data_range=rng).item(), abs=1e-5)
    assert out[1].item() == pytest.approx(ssim(a[1:] / 50.0, b[1:] / 50.0).item(), abs=1e-5)  # scale invariant


@pytest.mark.parametrize("fn", [ncc_global, nmi, mse, rmse, ssim])
def test_bad_shapes_raise(fn):
    with pytest.raises(ValueError, match=r"\(1, 1, 16, 16\).*\(1, 1, 16, 15\)"):
        fn(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 15))
    with pytest.raises(ValueError, match=r"\(1, 16, 16\)"):
        fn(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))


def test_ssim_too_small_and_nmi_bad_args_raise():
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 16\)"):
        ssim(torch.zeros(1, 1, 8, 16), torch.zeros(1, 1, 8, 16))
    with pytest.raises(ValueError, match="bins"):
        nmi(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), bins=1)
    with pytest.raises(ValueError, match="value_range"):
        nmi(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), value_range=(1.0, 1.0))
