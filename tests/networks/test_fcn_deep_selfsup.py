"""FCNDeepSelfSup (morphzoo.networks.nets.fcn_deep_selfsup): the three fields, ablations, TorchScript,
gradients, the deep self-supervision loss and per-pair optimisation with it."""

from __future__ import annotations

import pytest
import torch

from morphzoo.engines import RegistrationInferer
from morphzoo.inference import InstanceOptimization
from morphzoo.losses import RegistrationLoss
from morphzoo.networks.nets import FCNDeepSelfSup, resize_displacement


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("dims,size", [(2, (16, 24)), (3, (8, 16, 12))])
def test_three_fields_finest_first(dims, size):
    net = FCNDeepSelfSup(dims).eval()
    x = torch.rand(2, 2, *size)
    with torch.no_grad():
        full = net(x)
        fields = net(x, return_all=True)
    assert full.shape == (2, dims, *size)
    assert [tuple(f.shape) for f in fields] == [(2, dims, *[s // k for s in size]) for k in (1, 2, 4)]
    torch.testing.assert_close(fields[0], full)
    # regression layers start near zero (N(0, 1e-5)): an almost-identity initial registration
    assert max(float(f.abs().max()) for f in fields) < 1e-2


def test_return_all_attribute_and_inferer():
    net = FCNDeepSelfSup(2, channels=(4, 4, 4, 4), deconv_channels=(4, 4)).eval()
    x = torch.rand(1, 2, 16, 16)
    assert isinstance(net(x), torch.Tensor)
    net.return_all = True
    assert isinstance(net(x), list) and len(net(x)) == 3
    assert isinstance(net(x, return_all=False), torch.Tensor)  # the argument overrides the attribute
    # RegistrationInferer(return_all=True) passes the list through, the default takes the finest field
    assert len(RegistrationInferer(return_all=True)(x, net)) == 3
    torch.testing.assert_close(RegistrationInferer()(x, net), net(x)[0])


def test_paper_widths():
    net = FCNDeepSelfSup(3)
    convs = [net.conv1, net.conv2, net.conv3, net.conv4]
    assert [c.conv.out_channels for c in convs] == [32, 64, 128, 64]
    assert [net.deconv1.conv.out_channels, net.deconv2.conv.out_channels] == [64, 32]
    assert all(c.conv.kernel_size == (3, 3, 3) for c in convs)
    assert all(isinstance(c.adn.N, torch.nn.BatchNorm3d) and isinstance(c.adn.A, torch.nn.ReLU) for c in convs)
    assert [r.out_channels for r in (net.reg1, net.reg2, net.reg3)] == [3, 3, 3]


@pytest.mark.parametrize("arch", ["no_pooling", "coarse"])
def test_ablations_return_one_full_resolution_field(arch):
    net = FCNDeepSelfSup(2, architecture=arch).eval()
    x = torch.rand(1, 2, 16, 20)
    with torch.no_grad():
        fields = net(x, return_all=True)
    assert len(fields) == 1 and fields[0].shape == (1, 2, 16, 20) and net.num_fields == 1
    assert _n_params(net) < _n_params(FCNDeepSelfSup(2))  # no decoder
    if arch == "no_pooling":
        assert isinstance(net.pool1, torch.nn.Identity)
        net(torch.rand(1, 2, 15, 17))  # no size constraint without pooling
    else:
        assert isinstance(net.pool1, torch.nn.MaxPool2d)


def test_coarse_field_is_the_interpolated_quarter_field_scaled():
    torch.manual_seed(0)
    net = FCNDeepSelfSup(2, architecture="coarse", flow_init_std=0.1).eval()
    x = torch.rand(1, 2, 16, 24)
    with torch.no_grad():
        f3 = net.reg3(net.conv3(net.pool2(net.conv2(net.pool1(net.conv1(x))))))
        full = net(x)
    assert f3.shape == (1, 2, 4, 6)
    expected = torch.nn.functional.interpolate(f3, size=(16, 24), mode="bilinear", align_corners=False) * 4.0
    torch.testing.assert_close(full, expected)
    # a constant field keeps its physical size: 1 coarse voxel = 4 fine voxels
    const = torch.ones(1, 2, 4, 6)
    torch.testing.assert_close(resize_displacement(const, [16, 24]), torch.full((1, 2, 16, 24), 4.0))
    scaled = resize_displacement(torch.ones(1, 3, 2, 4, 8), [4, 4, 4])
    assert [float(scaled[0, c].mean()) for c in range(3)] == pytest.approx([2.0, 1.0, 0.5])


def test_stride_two_switch_keeps_the_nominal_resolutions():
    net = FCNDeepSelfSup(2, conv_stride=2).eval()
    assert net.conv1.conv.stride == (2, 2) and net.deconv1.conv.stride == (2, 2)
    with torch.no_grad():
        fields = net(torch.rand(2, 2, 64, 64), return_all=True)
    assert [tuple(f.shape[2:]) for f in fields] == [(64, 64), (32, 32), (16, 16)]


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 4}, {"architecture": "unet"}, {"conv_stride": 3}, {"channels": (8, 8)}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FCNDeepSelfSup(**kwargs)


@pytest.mark.parametrize("shape", [(1, 2, 18, 16), (1, 3, 16, 16), (1, 2, 16, 16, 16)])
def test_bad_input_raises_naming_the_shape(shape):
    with pytest.raises(ValueError, match="shape|size"):
        FCNDeepSelfSup(2)(torch.rand(*shape))


@pytest.mark.parametrize("arch", ["multires", "coarse", "no_pooling"])
def test_gradient_reaches_every_parameter(arch):
    torch.manual_seed(0)
    net = FCNDeepSelfSup(3, architecture=arch, channels=(4, 4, 4, 4), deconv_channels=(4, 4))
    mov, fix = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    loss = RegistrationLoss(3, "ncc", "tv", reg_weight=0.1, scale_weights=[1.0, 0.6, 0.3][: net.num_fields])
    loss(net(torch.cat([mov, fix], 1), return_all=True), torch.cat([mov, fix], 1)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert not missing, missing


@pytest.mark.parametrize("arch", ["multires", "coarse"])
def test_torchscript_same_output_and_checks(arch):
    net = FCNDeepSelfSup(2, architecture=arch, flow_init_std=0.1).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(1, 2, 16, 24)
    with torch.no_grad():
        a, b = net(x), scripted(x)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert float(a.abs().max()) > 1e-3
        fields = scripted(x, True)
        assert len(fields) == net.num_fields
    with pytest.raises(Exception):
        scripted(torch.rand(1, 2, 18, 24))  # the size check survives scripting


def test_deep_supervision_loss_is_the_weighted_sum_over_resolutions(smooth_volume):
    """Weights 1, 0.6, 0.3 of [-NCC + lambda TV] at full, 1/2, 1/4 resolution, images average-pooled."""
    import torch.nn.functional as F

    n = 16
    mov = torch.as_tensor(smooth_volume((n, n, n), 1))[None, None]
    fix = torch.as_tensor(smooth_volume((n, n, n), 2))[None, None]
    t = torch.cat([mov, fix], 1)
    g = torch.Generator().manual_seed(0)
    fields = [0.5 * torch.randn(1, 3, n // k, n // k, n // k, generator=g) for k in (1, 2, 4)]
    deep = RegistrationLoss(3, "ncc", "tv", reg_weight=0.1, scale_weights=[1.0, 0.6, 0.3])
    single = RegistrationLoss(3, "ncc", "tv", reg_weight=0.1)
    parts = [float(single(f, F.avg_pool3d(t, k) if k > 1 else t)) for f, k in zip(fields, (1, 2, 4))]
    assert float(deep(fields, t)) == pytest.approx(parts[0] + 0.6 * parts[1] + 0.3 * parts[2], rel=1e-5)


def _shifted_blobs(shift: int = 2, size: int = 32):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = lambda cy, cx: torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)  # noqa: E731
    return blob(14, 14)[None, None].float(), blob(14 + shift, 14 + shift)[None, None].float()


@pytest.mark.parametrize("from_scratch", [False, True])
def test_instance_optimisation_with_deep_supervision(from_scratch):
    """Per-pair optimisation on all three fields lowers the full-resolution loss; the bundle's
    network (and its return_all attribute) is untouched; scratch mode re-initialises to a near-zero field."""
    torch.manual_seed(0)
    net = FCNDeepSelfSup(2, channels=(8, 8, 8, 8), deconv_channels=(8, 8)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    mov, fix = _shifted_blobs()
    pair = torch.cat([mov, fix], 1)
    loss = RegistrationLoss(2, "ncc", "tv", reg_weight=0.01, scale_weights=[1.0, 0.6, 0.3])
    opt = InstanceOptimization(net, loss, steps=30, learning_rate=1e-2, inferer=RegistrationInferer(return_all=True),
                               from_scratch=from_scratch, return_all=True)
    ddf = opt(mov, fix)
    assert ddf.shape == (1, 2, 32, 32) and not ddf.requires_grad
    assert opt.last_losses[-1] < opt.last_losses[0] - 0.05, opt.last_losses[::5]
    final = RegistrationLoss(2, "ncc", "tv", reg_weight=0.01)
    with torch.no_grad():
        own = net(pair)
    assert float(final(ddf, pair)) < float(final(own, pair))
    assert net.return_all is False
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"bundle network parameter {k} changed")
    if from_scratch:  # 0 steps from scratch: the re-initialised near-zero field, not the network's
        zero = InstanceOptimization(net, loss, steps=0, from_scratch=True, return_all=True,
                                    inferer=RegistrationInferer(return_all=True))(mov, fix)
        assert float(zero.abs().max()) < 1e-2
    with pytest.raises(ValueError, match="return_all"):
        from morphzoo.networks.nets import VoxelMorphBackbone

        InstanceOptimization(VoxelMorphBackbone(2, "vm1"), loss, return_all=True)
