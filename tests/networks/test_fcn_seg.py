"""FCN-8s style segmenter (morphzoo.networks.nets.FCNSegmenter)."""

from __future__ import annotations

import pytest
import torch

from morphzoo.networks.nets import FCNSegmenter


@pytest.mark.parametrize("dims,shape", [(2, (37, 50)), (2, (64, 64)), (3, (20, 17, 16))])
def test_any_size_maps_to_class_logits_on_the_input_grid(dims, shape):
    net = FCNSegmenter(dims, 1, 3, channels=(4, 8, 8, 16, 16)).eval()
    x = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, *shape)
    # padding is internal: the logits of a sample do not depend on the batch it travels with
    with torch.no_grad():
        torch.testing.assert_close(net(x[:1]), y[:1], rtol=1e-5, atol=1e-5)


def test_scores_come_from_three_resolutions_fused_coarse_to_fine():
    """Zeroing a score layer's weights and bias removes exactly its contribution."""
    net = FCNSegmenter(2, 1, 2, channels=(4, 8, 8, 16, 16)).eval()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for layer in (net.score4, net.score8, net.score16):
            layer.weight.zero_()
            layer.bias.zero_()
        assert net(x).abs().max() == 0
        net.score16.bias.fill_(1.0)  # a constant 1/16 score upsampled twice (bilinear) stays constant
        torch.testing.assert_close(net(x), torch.ones(1, 2, 32, 32))


def test_gradients_reach_every_parameter_and_torchscript_matches(assert_every_parameter_learns):
    net = FCNSegmenter(2, 1, 3, channels=(4, 8, 8, 16, 16))
    assert_every_parameter_learns(net, torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2)))
    net.eval()
    x = torch.rand(1, 1, 40, 24)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="5 encoder stages"):
        FCNSegmenter(2, 1, 2, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="spatial_dims"):
        FCNSegmenter(1)
    with pytest.raises(ValueError, match="spatial dims"):
        FCNSegmenter(2, 1, 2, channels=(4, 8, 8, 16, 16))(torch.zeros(1, 1, 8, 8, 8))
