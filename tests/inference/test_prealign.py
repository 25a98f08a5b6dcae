"""Pre-alignment stages (morphzoo.inference.prealign): known affines recovered by the optimiser and by
a trained network on synthetic pairs, moments, stage selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from morphzoo.engines import AffineInferer
from morphzoo.inference import NetAffine, OptimAffine, make_prealign
from morphzoo.inference.prealign import image_moments
from morphzoo.networks.nets import AffineNet
from morphzoo.transforms.affine import affine_to_ddf, centred_affine, resample_affine


def blobs(size, seed: int = 0, n: int = 6) -> torch.Tensor:
    """``(1, 1, *size)`` smooth non-negative image of Gaussian blobs, zero at the border."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")
    img = torch.zeros(size)
    for _ in range(n):
        c = (torch.rand(len(size), generator=g) - 0.5) * 1.0
        w = 0.08 + 0.12 * torch.rand(1, generator=g)
        img += torch.exp(-sum((a - ci) ** 2 for a, ci in zip(axes, c)) / (2 * w**2))
    return (img / img.max())[None, None]


def field_error(theta: torch.Tensor, truth: torch.Tensor, size) -> float:
    """Mean voxel distance between the two affines' fields over the inner half of the grid."""
    d = (affine_to_ddf(theta, size) - affine_to_ddf(truth, size)).norm(dim=1)
    inner = (slice(None),) + tuple(slice(s // 4, s - s // 4) for s in size)
    return float(d[inner].mean())


CASES = {
    "2d": ((48, 64), torch.tensor([[2.5, -3.0, 0.12, 0.08]])),  # shift (voxels), rotation, log-scale
    "3d": ((24, 28, 32), torch.tensor([[1.5, -1.0, 2.0, 0.06, -0.05, 0.04, 0.05]])),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("transform", ["similarity", "affine"])
def test_optimiser_recovers_a_known_similarity(case: str, transform: str) -> None:
    size, params = CASES[case]
    truth = centred_affine(params, "similarity", size)
    moving = blobs(size, seed=3)
    fixed = resample_affine(moving, truth, size)  # fixed(x) = moving(A x): registering gives A
    start = field_error(torch.eye(len(size), len(size) + 1)[None], truth, size)
    stage = OptimAffine(len(size), transform=transform, image_loss="mse", levels=(2, 1), iterations=(150, 80), learning_rate=0.02)
    theta = stage(moving, fixed)
    err = field_error(theta, truth, size)
    assert start > 2.0, "the test pair must start misaligned"
    assert err < 0.25 * start and err < 0.6, f"{transform} in {case}: field error {err:.3f} voxels (identity {start:.3f})"
    assert stage.last_losses[-1] < stage.last_losses[0]


def test_optimiser_is_batched_and_pairs_do_not_interact() -> None:
    size, params = CASES["2d"]
    truth = centred_affine(params, "similarity", size)
    moving = blobs(size, seed=3)
    fixed = resample_affine(moving, truth, size)
    stage = OptimAffine(2, transform="similarity", image_loss="mse", levels=(2, 1), iterations=(60, 30))
    both = stage(torch.cat([moving, moving]), torch.cat([fixed, moving]))
    alone = stage(moving, fixed)
    torch.testing.assert_close(both[:1], alone, atol=1e-4, rtol=0)
    assert field_error(both[1:], torch.eye(2, 3)[None], size) < 0.2  # the identical pair stays at the identity


def test_moments_of_a_known_blob() -> None:
    img = torch.zeros(1, 1, 21, 31)
    img[0, 0, 5:10, 20:27] = 1.0
    centre, cov = image_moments(img)
    torch.testing.assert_close(centre[0], torch.tensor([7.0, 23.0]))
    torch.testing.assert_close(cov[0], torch.diag(torch.tensor([2.0, 4.0])))  # variance of 5 / 7 consecutive integers


def test_centre_of_mass_start_matches_a_shift() -> None:
    size = (40, 40)
    moving = blobs(size, seed=5)
    truth = centred_affine(torch.tensor([[4.0, -3.0]]), "translation", size)
    fixed = resample_affine(moving, truth, size)
    theta = OptimAffine(2, transform="translation", iterations=0, levels=(1,), init="com")(moving, fixed)
    assert field_error(theta, truth, size) < 0.5  # the blobs stay inside the grid: moments shift exactly


class _SyntheticPairs(torch.utils.data.Dataset):
    """Random similarity maps of one blob image: (pair, true theta)."""

    def __init__(self, n: int, seed: int, size=(32, 32)) -> None:
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self.moving = blobs(size, seed=11, n=4)
        self.params = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 8, (torch.rand(n, 2, generator=g) - 0.5) * 0.3], 1)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, i: int):
        theta = centred_affine(self.params[i : i + 1], "similarity", self.size)
        fixed = resample_affine(self.moving, theta, self.size)
        return torch.cat([self.moving, fixed], 1)[0], theta[0]


def test_trained_affine_net_recovers_known_affines_on_new_pairs() -> None:
    """A small AffineNet trained (image MSE through AffineInferer, as train_affine.json does) on random
    similarity maps of a synthetic image predicts the maps of pairs it has not seen."""
    torch.manual_seed(0)
    size = (32, 32)
    net = AffineNet(spatial_dims=2, image_size=size, num_channel_initial=8, depth=2, hidden=64)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loader = torch.utils.data.DataLoader(_SyntheticPairs(512, seed=0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    inferer = AffineInferer()
    from monai.networks.blocks import Warp

    warp = Warp(mode="bilinear", padding_mode="border")
    for _ in range(6):
        for pair, _theta in loader:
            opt.zero_grad()
            ddf = inferer(pair, net)
            F.mse_loss(warp(pair[:, :1], ddf), pair[:, 1:]).backward()
            opt.step()
    test = _SyntheticPairs(32, seed=1)
    pair = torch.stack([test[i][0] for i in range(len(test))])
    truth = torch.stack([test[i][1] for i in range(len(test))])
    stage = NetAffine(net)
    pred = stage(pair[:, :1], pair[:, 1:])
    err = field_error(pred, truth, size)
    start = field_error(torch.eye(2, 3).expand(len(test), 2, 3), truth, size)
    assert err < 0.35 * start, f"trained net: field error {err:.2f} voxels, identity {start:.2f}"


def test_net_affine_missing_weights_says_how_to_proceed(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--prealign none"):
        NetAffine(AffineNet(2, (16, 16), num_channel_initial=4, depth=2), checkpoint=tmp_path / "affine.pt")


def test_make_prealign_modes() -> None:
    optim = OptimAffine(2)
    net = AffineNet(2, (16, 16), num_channel_initial=4, depth=2)
    assert make_prealign("none", net, None, optim) is None
    assert make_prealign("opt", net, None, optim) is optim
    s = make_prealign("net+opt", net, None, optim)
    assert isinstance(s, NetAffine) and s.polish is optim
    assert make_prealign("net", net, None, optim).polish is None
    with pytest.raises(ValueError, match="none, opt, net, net\\+opt"):
        make_prealign("rigid", net, None, optim)
