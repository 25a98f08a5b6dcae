"""GhostSC convolution and the GhostSC U-Net: parameter counts (paper eq. 6-7), shapes, gradients, TorchScript."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from morphzoo.networks.blocks import AsymmetricConv, GhostSCConv, SelfCalibratedConv, ghost_sc_param_count
from morphzoo.networks.nets import GhostSCUNet


def _conv_weights(module: torch.nn.Module) -> int:
    """Convolution weights only (no normalisation layers), as the paper counts them."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))


@pytest.mark.parametrize("d,m,l,g", [(16, 32, 3, 1), (1, 16, 3, 1), (64, 128, 5, 1), (32, 64, 3, 2), (8, 16, 3, 4)])
def test_ghost_sc_weights_follow_equation_7(d, m, l, g):
    mod = GhostSCConv(2, d, m, kernel_size=l, groups=g)
    # eq. (7): D*1*1*M/2 + 4 * (M/4 * l*1 * M/4 + M/4 * 1*l * M/4) / g
    expected = d * m // 2 + 4 * ((m // 4) * l * (m // 4) + (m // 4) * l * (m // 4)) // g
    assert _conv_weights(mod) == expected == ghost_sc_param_count(d, m, l, g)
    if d >= 8:  # eq. (6), a plain l x l convolution, is larger except for a near-empty input (D=1)
        assert expected < l * l * d * m


def test_ghost_sc_param_count_3d():
    mod = GhostSCConv(3, 8, 16)
    assert _conv_weights(mod) == ghost_sc_param_count(8, 16, 3, spatial_dims=3)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 3, 17, 23)), (3, (1, 4, 9, 10, 11))])
def test_ghost_sc_shapes_and_gradients(spatial_dims, shape):
    mod = GhostSCConv(spatial_dims, shape[1], 16)
    x = torch.randn(shape, requires_grad=True)
    y = mod(x)
    assert y.shape == (shape[0], 16) + shape[2:]
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())


def test_ghost_sc_output_keeps_essential_features():
    mod = GhostSCConv(2, 4, 8).eval()
    x = torch.randn(1, 4, 12, 12)
    y = mod(x)
    assert torch.allclose(y[:, :4], mod.essential(x))  # first half: the essential 1x1 features


def test_asymmetric_conv_is_separable_kernel():
    conv = AsymmetricConv(2, 1, kernel_size=3)
    assert [tuple(c.kernel_size) for c in conv] == [(3, 1), (1, 3)]
    with torch.no_grad():
        conv[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1))
        conv[1].weight.copy_(torch.tensor([1.0, 0.0, -1.0]).view(1, 1, 1, 3))
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    # impulse response = outer product of the two kernels, flipped (cross-correlation)
    expected = torch.outer(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(conv(x)[0, 0, 2:5, 2:5], expected)


def test_self_calibrated_conv_shape_and_validation():
    sc = SelfCalibratedConv(2, 8)
    assert sc(torch.randn(2, 8, 13, 19)).shape == (2, 8, 13, 19)
    with pytest.raises(ValueError, match="even"):
        SelfCalibratedConv(2, 7)
    with pytest.raises(ValueError, match="divisible by 4"):
        GhostSCConv(2, 4, 10)
    with pytest.raises(ValueError, match="input channels"):
        GhostSCConv(2, 4, 8)(torch.randn(1, 3, 8, 8))


def test_ghost_sc_unet_shapes_odd_sizes_and_fewer_parameters():
    feats = (16, 32, 64, 128, 256, 16)
    net = GhostSCUNet(2, 1, 2, features=feats)
    plain = BasicUNet(2, 1, 2, features=feats)
    for size in ((160, 240), (67, 101)):
        assert net(torch.randn(1, 1, *size)).shape == (1, 2, *size)
    n_net = sum(p.numel() for p in net.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert n_net < 0.5 * n_plain


def test_ghost_sc_unet_gradient_and_torchscript():
    net = GhostSCUNet(2, 1, 2, features=(8, 8, 16, 16, 32, 8))
    x = torch.randn(2, 1, 32, 48)
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    scripted = torch.jit.script(net).eval()
    assert torch.allclose(scripted(x), net(x), atol=1e-5)


def test_ghost_sc_unet_3d_and_validation():
    net = GhostSCUNet(3, 1, 3, features=(4, 8, 8, 16, 16, 4)).eval()  # 1^3 bottleneck: BN needs eval
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        GhostSCUNet(2, 1, 2, features=(6, 8, 8, 16, 16, 4))
    with pytest.raises(ValueError, match=r"\(B, 1"):
        net(torch.randn(1, 2, 16, 16, 16))
