"""Affine maps as matrices and fields (morphzoo.transforms.affine): analytic cases in 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.blocks import Warp

from morphzoo.transforms.affine import (
    affine_to_ddf,
    centred_affine,
    compose_affine_field,
    compose_thetas,
    identity_theta,
    num_affine_params,
    resample_affine,
    theta_from_voxel,
    theta_to_voxel,
)

SIZES = {"2d": (20, 31), "3d": (12, 15, 17)}


def _linear_image(size) -> torch.Tensor:
    """A linear function of the voxel index: linear interpolation reproduces it exactly."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in size], indexing="ij"))
    coef = torch.tensor([0.7, -0.3, 0.2][: len(size)], dtype=torch.float64).view(-1, *[1] * len(size))
    return (grid * coef).sum(0)[None, None]


@pytest.mark.parametrize("case", sorted(SIZES))
def test_identity_theta_gives_zero_field(case: str) -> None:
    size = SIZES[case]
    ddf = affine_to_ddf(identity_theta(2, len(size), torch.float64), size)
    assert ddf.shape == (2, len(size), *size)
    assert ddf.abs().max() < 1e-12


def test_translation_field_is_the_translation_in_voxels() -> None:
    size = (21, 41)
    params = torch.tensor([[3.0, -2.5]], dtype=torch.float64)  # voxels along axis 0, axis 1
    ddf = affine_to_ddf(centred_affine(params, "translation", size), size)
    torch.testing.assert_close(ddf[0, 0], torch.full(size, 3.0, dtype=torch.float64))
    torch.testing.assert_close(ddf[0, 1], torch.full(size, -2.5, dtype=torch.float64))


def test_rotation_about_the_centre_in_voxels() -> None:
    size = (41, 41)
    angle = 0.3
    theta = centred_affine(torch.tensor([[0.0, 0.0, angle]], dtype=torch.float64), "rigid", size)
    vox = theta_to_voxel(theta, size)[0]
    rot = vox[:, :2]
    torch.testing.assert_close(rot, torch.tensor([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]], dtype=torch.float64))
    centre = torch.tensor([20.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(rot @ centre + vox[:, 2], centre)  # the centre is fixed
    assert abs(torch.linalg.det(rot).item() - 1.0) < 1e-12


@pytest.mark.parametrize("case", sorted(SIZES))
@pytest.mark.parametrize("mode", ["translation", "rigid", "similarity", "affine"])
def test_zero_parameters_are_the_identity(case: str, mode: str) -> None:
    size = SIZES[case]
    theta = centred_affine(torch.zeros(1, num_affine_params(mode, len(size)), dtype=torch.float64), mode, size)
    torch.testing.assert_close(theta, identity_theta(1, len(size), torch.float64))


@pytest.mark.parametrize("case", sorted(SIZES))
def test_voxel_normalised_round_trip_and_grid_independence(case: str) -> None:
    size = SIZES[case]
    n = len(size)
    g = torch.Generator().manual_seed(0)
    theta = identity_theta(2, n, torch.float64) + 0.05 * torch.randn(2, n, n + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(theta_from_voxel(theta_to_voxel(theta, size), size), theta)
    # the same normalised map on a grid twice as fine: the field is the coarse one rescaled
    fine = tuple(2 * s - 1 for s in size)
    coarse_ddf = affine_to_ddf(theta, size)
    fine_ddf = affine_to_ddf(theta, fine)
    idx = (slice(None), slice(None)) + tuple(slice(None, None, 2) for _ in size)
    torch.testing.assert_close(fine_ddf[idx], 2.0 * coarse_ddf)


@pytest.mark.parametrize("case", sorted(SIZES))
def test_resample_affine_equals_warp_with_the_affine_field(case: str) -> None:
    size = SIZES[case]
    n = len(size)
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, *size, generator=g, dtype=torch.float64)
    theta = centred_affine(0.05 * torch.randn(1, num_affine_params("affine", n), generator=g, dtype=torch.float64), "affine", size)
    warped = Warp(mode="bilinear", padding_mode="border")(image, affine_to_ddf(theta, size))
    torch.testing.assert_close(resample_affine(image, theta, size), warped, atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", sorted(SIZES))
def test_composition_equals_warping_twice(case: str) -> None:
    """x -> A(x + u(x)): one warp with the composed field equals the affine warp followed by a warp
    with u. On an image linear in the coordinates both interpolations are exact (away from the border)."""
    size = SIZES[case]
    n = len(size)
    g = torch.Generator().manual_seed(2)
    image = _linear_image(size)
    theta = centred_affine(torch.tensor([[0.8, -0.5, 0.6][:n] + [0.04] * (num_affine_params("similarity", n) - n)], dtype=torch.float64), "similarity", size)
    u = 0.7 * torch.randn(1, n, *size, generator=g, dtype=torch.float64)
    warp = Warp(mode="bilinear", padding_mode="border")
    twice = warp(warp(image, affine_to_ddf(theta, size)), u)
    once = warp(image, compose_affine_field(theta, u))
    inner = (slice(None), slice(None)) + tuple(slice(4, -4) for _ in size)
    torch.testing.assert_close(once[inner], twice[inner], atol=1e-9, rtol=0)
    assert (once - warp(image, affine_to_ddf(theta, size)))[inner].abs().max() > 0.1  # u matters: the check can fail


def test_compose_thetas_is_the_point_map_composition() -> None:
    size = (30, 30)
    a = centred_affine(torch.tensor([[2.0, 1.0, 0.2, 0.1]], dtype=torch.float64), "similarity", size)
    b = centred_affine(torch.tensor([[-1.0, 3.0, -0.1, 0.0]], dtype=torch.float64), "similarity", size)
    ab = compose_thetas(a, b)
    x = torch.tensor([0.3, -0.4, 1.0], dtype=torch.float64)
    expected = a[0] @ torch.cat([b[0] @ x, torch.ones(1, dtype=torch.float64)])
    torch.testing.assert_close(ab[0] @ x, expected)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, N \+ 1\)"):
        affine_to_ddf(torch.zeros(1, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="3D"):
        affine_to_ddf(identity_theta(1, 3), (4, 4))
    with pytest.raises(ValueError, match="parameters"):
        centred_affine(torch.zeros(1, 3), "rigid", (4, 4, 4))
