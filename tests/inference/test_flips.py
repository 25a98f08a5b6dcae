"""FlipInferer: flip test-time augmentation as a MONAI inferer."""

from __future__ import annotations

import pytest
import torch

from morphzoo.inference import FlipInferer


class _RampNet(torch.nn.Module):
    """Two-class logits that depend on position (not flip-equivariant): class 1 grows with x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-2.0, 2.0, x.shape[-1]).expand_as(x[:, :1])
        return torch.cat([torch.zeros_like(ramp), ramp + x[:, :1]], dim=1)


def test_flips_listed():
    assert FlipInferer((0, 1)).flips() == [(), (0,), (1,), (0, 1)]
    assert FlipInferer(()).flips() == [()]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_averages_probabilities_over_flips(spatial_dims):
    torch.manual_seed(0)
    x = torch.rand(2, 1, *([6] * (spatial_dims - 1)), 9)
    net = _RampNet()
    axes = tuple(range(spatial_dims))
    out = FlipInferer(axes)(x, net)
    assert out.shape == (2, 2, *x.shape[2:])
    inferer = FlipInferer(axes)
    expected = torch.stack([torch.softmax(net(x.flip([2 + a for a in f])), 1).flip([2 + a for a in f]) for f in inferer.flips()]).mean(0)
    # log-probabilities: the bundle's softmax gives back the averaged probabilities
    assert torch.allclose(torch.softmax(out, 1), expected, atol=1e-6)
    # on a blank input, averaging with the mirror along the ramp's axis makes the map symmetric
    flat = torch.softmax(FlipInferer((spatial_dims - 1,))(torch.zeros_like(x), net), 1)
    plain = torch.softmax(net(torch.zeros_like(x)), 1)
    assert not torch.allclose(plain, plain.flip(-1), atol=1e-3)
    assert torch.allclose(flat, flat.flip(-1), atol=1e-6)


def test_no_flip_is_softmax_of_the_network():
    x = torch.rand(1, 1, 5, 7)
    net = _RampNet()
    assert torch.allclose(torch.softmax(FlipInferer(())(x, net), 1), torch.softmax(net(x), 1), atol=1e-6)


def test_bad_axes():
    with pytest.raises(ValueError, match="distinct"):
        FlipInferer((0, 0))
    with pytest.raises(ValueError, match="spatial axes"):
        FlipInferer((0, 2))(torch.zeros(1, 1, 4, 4), _RampNet())
