from __future__ import annotations

import math

import pytest
import torch

from morphzoo.metrics import (
    folding_count,
    folding_percentage,
    jacobian_determinant,
    jacobian_stats,
    jacobian_std,
    sdlogj,
)

SHAPES = {2: (9, 11), 3: (7, 8, 9)}


def _coords(shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel coordinates (N, *S) in float64, channel i = index along array axis i."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    return torch.stack(grids)


def _linear_ddf(a: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """ddf(x) = A x, shape (1, N, *S)."""
    x = _coords(shape)
    return torch.einsum("ij,j...->i...", a, x)[None]


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_field(dims):
    ddf = torch.zeros(2, dims, *SHAPES[dims])
    det = jacobian_determinant(ddf)
    assert det.shape == (2, *SHAPES[dims])
    assert torch.equal(det, torch.ones_like(det))
    assert folding_count(ddf).tolist() == [0, 0]
    assert folding_percentage(ddf).tolist() == [0.0, 0.0]
    assert jacobian_std(ddf).tolist() == [0.0, 0.0]
    assert sdlogj(ddf).tolist() == [0.0, 0.0]
    stats = jacobian_stats(ddf)
    assert set(stats) == {"folding_count", "folding_percent", "jacobian_std", "sdlogj", "sdlogj_l2r"}
    assert stats["sdlogj_l2r"].abs().max() < 1e-6  # log(1 + 3) everywhere, up to float32 round-off
    assert all(v.shape == (2,) for v in stats.values())


@pytest.mark.parametrize("dims", [2, 3])
def test_constant_shift_keeps_det_one(dims):
    ddf = torch.ones(1, dims, *SHAPES[dims], dtype=torch.float64) * torch.tensor([2.5, -1.0, 0.3][:dims]).view(
        1, dims, *([1] * dims)
    )
    torch.testing.assert_close(jacobian_determinant(ddf), torch.ones(1, *SHAPES[dims], dtype=torch.float64))


@pytest.mark.parametrize("dims", [2, 3])
def test_isotropic_scale(dims):
    ddf = _linear_ddf(0.5 * torch.eye(dims, dtype=torch.float64), SHAPES[dims])  # phi(x) = 1.5 x
    det = jacobian_determinant(ddf)
    torch.testing.assert_close(det, torch.full_like(det, 1.5**dims))
    assert jacobian_std(ddf).item() == pytest.approx(0.0, abs=1e-12)
    assert sdlogj(ddf).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_general_linear_field_exact_everywhere(dims):
    gen = torch.Generator().manual_seed(dims)
    a = 0.4 * torch.randn(dims, dims, generator=gen, dtype=torch.float64)
    ddf = _linear_ddf(a, SHAPES[dims])
    expected = torch.linalg.det(torch.eye(dims, dtype=torch.float64) + a)
    det = jacobian_determinant(ddf)
    torch.testing.assert_close(det, torch.full_like(det, expected.item()))  # borders included


def test_channel_i_is_array_axis_i():
    # ddf_0 depends on axis 1 only and ddf_1 on axis 0 only: det = 1 - a * b
    shape = (6, 7)
    a = torch.tensor([[0.0, 0.3], [0.5, 0.0]], dtype=torch.float64)
    det = jacobian_determinant(_linear_ddf(a, shape))
    torch.testing.assert_close(det, torch.full_like(det, 1 - 0.15))
    # stretching along axis 0 only, measured from the channel-0 derivative along axis 0
    ddf = torch.zeros(1, 2, *shape, dtype=torch.float64)
    ddf[0, 0] = 0.25 * _coords(shape)[0]
    ddf[0, 1] = 0.5 * _coords(shape)[0]  # shear, no volume change (swapped channels would give 1.5)
    torch.testing.assert_close(jacobian_determinant(ddf), torch.full((1, *shape), 1.25, dtype=torch.float64))


def test_central_inside_one_sided_at_borders():
    n, w = 8, 5
    ddf = torch.zeros(1, 2, n, w, dtype=torch.float64)
    x0 = torch.arange(n, dtype=torch.float64)
    ddf[0, 0] = 0.1 * x0[:, None] ** 2
    det = jacobian_determinant(ddf)[0, :, 0]
    expected = 1 + 0.2 * x0  # central differences are exact for a quadratic
    expected[0] = 1 + 0.1 * (1 - 0)  # forward difference
    expected[-1] = 1 + 0.1 * ((n - 1) ** 2 - (n - 2) ** 2)  # backward difference
    torch.testing.assert_close(det, expected)


# profile of phi_0 = x_0 + ddf_0 along axis 0: goes back between indices 3 and 5
PHI = torch.tensor([0, 1, 2, 3, 2, 1, 2, 3, 4, 5], dtype=torch.float64)
DPHI = torch.tensor([1, 1, 1, 0, -1, 0, 1, 1, 1, 1], dtype=torch.float64)  # torch.gradient of PHI


def _folded(dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of (identity, fold along axis 0 inside a block of the other axes) and the expected det of item 1."""
    other = (12,) if dims == 2 else (6, 7)
    block = (slice(3, 7),) if dims == 2 else (slice(1, 4), slice(2, 6))
    shape = (len(PHI), *other)
    ddf = torch.zeros(2, dims, *shape, dtype=torch.float64)
    disp = (PHI - torch.arange(len(PHI), dtype=torch.float64)).view(-1, *([1] * (dims - 1)))
    ddf[(1, 0, slice(None), *block)] = disp.expand(-1, *[b.stop - b.start for b in block])
    expected = torch.ones(shape, dtype=torch.float64)
    expected[(slice(None), *block)] = DPHI.view(-1, *([1] * (dims - 1)))
    return ddf, expected


@pytest.mark.parametrize("dims", [2, 3])
def test_known_folding(dims):
    ddf, expected = _folded(dims)
    det = jacobian_determinant(ddf)
    torch.testing.assert_close(det[1], expected)  # det = 1 + d ddf_0 / d x_0 since ddf_1 (= ddf_2) = 0
    n_block = 4 if dims == 2 else 3 * 4  # voxels of the block in the non-folded axes
    n_fold = 3 * n_block  # rows 3, 4, 5 of PHI
    assert int((expected <= 0).sum()) == n_fold
    n_total = expected.numel()
    assert folding_count(ddf).tolist() == [0, n_fold]
    torch.testing.assert_close(
        folding_percentage(ddf), torch.tensor([0.0, 100.0 * n_fold / n_total], dtype=torch.float64)
    )
    torch.testing.assert_close(jacobian_std(ddf)[1], expected.std(correction=0))
    f = n_fold / n_total
    assert sdlogj(ddf)[1].item() == pytest.approx(abs(math.log(1e-9)) * math.sqrt(f * (1 - f)), rel=1e-9)
    assert sdlogj(ddf, eps=1e-3)[1].item() == pytest.approx(abs(math.log(1e-3)) * math.sqrt(f * (1 - f)), rel=1e-9)
    stats = jacobian_stats(ddf)
    assert stats["folding_count"].tolist() == [0, n_fold]
    torch.testing.assert_close(stats["sdlogj"], sdlogj(ddf))
    torch.testing.assert_close(stats["jacobian_std"], jacobian_std(ddf))
    torch.testing.assert_close(stats["folding_percent"], folding_percentage(ddf))


def test_mask_restricts_voxels():
    ddf, expected = _folded(2)
    shape = expected.shape
    top = torch.zeros(2, *shape, dtype=torch.bool)
    top[:, :3] = True  # rows 0..2: no folding there
    assert folding_count(ddf, mask=top).tolist() == [0, 0]
    fold_rows = torch.zeros(2, 1, *shape, dtype=torch.bool)
    fold_rows[:, :, 3:6] = True
    assert folding_count(ddf, mask=fold_rows).tolist() == [0, 12]
    expected_percent = torch.tensor([0.0, 100 * 12 / 36.0], dtype=torch.float64)
    torch.testing.assert_close(folding_percentage(ddf, mask=fold_rows), expected_percent)
    # batch-size-1 mask broadcasts
    assert folding_count(ddf, mask=fold_rows[:1]).tolist() == [0, 12]
    assert jacobian_std(ddf, mask=top).tolist() == [0.0, 0.0]


def test_border_crop():
    ddf, expected = _folded(2)  # rows 3..5, columns 3..6 fold; shape (10, 12)
    assert folding_count(ddf, border=2).tolist() == [0, 12]
    assert folding_count(ddf, border=4).tolist() == [0, 6]  # rows 4..5 x columns 4..7 kept: 2 x 3 folds
    assert folding_percentage(ddf, border=2)[1].item() == pytest.approx(100 * 12 / (6 * 8))
    with pytest.raises(ValueError, match="border"):
        folding_count(ddf, border=5)


def test_integer_ddf_is_accepted():
    det = jacobian_determinant(torch.zeros(1, 2, 4, 4, dtype=torch.int64))
    assert det.dtype == torch.float32 and torch.equal(det, torch.ones(1, 4, 4))


@pytest.mark.parametrize(
    "shape", [(1, 3, 8, 8), (1, 2, 8, 8, 8), (2, 8, 8), (1, 1, 8, 8), (1, 4, 4, 4, 4, 4), (1, 2, 1, 8)]
)
def test_bad_ddf_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(" + ", ".join(str(s) for s in shape)):
        jacobian_determinant(torch.zeros(shape))


def test_bad_mask_shape_raises():
    ddf = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 7\)"):
        folding_count(ddf, mask=torch.ones(2, 1, 8, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        sdlogj(ddf, mask=torch.ones(3, 8, 8, dtype=torch.bool))


def test_sdlogj_learn2reg_definition():
    """Learn2Reg's SDlogJ: std(log(det + 3)) over the field cropped by 2 voxels. A field that folds
    one interior voxel region differs from ours: the +3 keeps log finite, the crop drops the border."""
    from morphzoo.metrics import sdlogj_learn2reg

    g = torch.Generator().manual_seed(0)
    ddf = torch.randn(1, 3, 12, 12, 12, generator=g, dtype=torch.float64) * 0.3
    det = jacobian_determinant(ddf)[0, 2:-2, 2:-2, 2:-2]
    expected = torch.log((det + 3).clamp(1e-9, 1e9)).flatten().std(unbiased=False)
    torch.testing.assert_close(sdlogj_learn2reg(ddf)[0], expected)
    assert sdlogj_learn2reg(ddf)[0] < sdlogj(ddf)[0]  # the two definitions are different numbers
