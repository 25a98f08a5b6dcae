"""FMIRNet (morphzoo.networks.nets.fmirnet): the fusion Φp = Φ1 + up(Φ2) + up(Φ3) with rescaled
values, the spatial attention Φ = sigmoid(conv(Φp)) ⊗ Φp, the FMIRNet-1/-2 ablations, shared vs
separate heads, odd grids, TorchScript and gradients, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from morphzoo.losses import RegistrationLoss
from morphzoo.networks.nets import FMIRNet, ResUNet


def _constant_heads(net: FMIRNet, values: list[float]) -> None:
    """Make each head output a constant field (value v along every axis)."""
    for head, v in zip(net.heads, values):
        torch.nn.init.zeros_(head.weight)
        head.bias.data.fill_(v)


@pytest.mark.parametrize("dims,size", [(2, (16, 24)), (3, (8, 12, 16))])
def test_shapes_and_near_identity_start(dims, size):
    net = FMIRNet(dims, channels=(8, 16)).eval()
    x = torch.rand(2, 2, *size)
    with torch.no_grad():
        fields = net.scale_fields(x)
        out = net(x)
    assert [tuple(f.shape) for f in fields] == [(2, dims, *[s // k for s in size]) for k in (1, 2, 4)]
    assert out.shape == (2, dims, *size)
    assert float(out.abs().max()) < 1e-2  # heads start at N(0, 1e-5)


def test_fusion_rescales_and_sums_the_scales_then_attention_halves_at_start():
    """Separate constant heads c1, c2, c3 on grids 1, 1/2, 1/4 give Φp = c1 + 2·c2 + 4·c3 (Eq. 2);
    the zero-initialised attention convolution gives W = 1/2 (Eqs. 3-4)."""
    net = FMIRNet(2, channels=(8, 16), separate_heads=True, attention=False).eval()
    _constant_heads(net, [1.0, 0.5, 0.25])
    with torch.no_grad():
        fused = net(torch.rand(1, 2, 16, 16))
    torch.testing.assert_close(fused, torch.full_like(fused, 1.0 + 2 * 0.5 + 4 * 0.25))
    net.use_attention = True
    with torch.no_grad():
        attended = net(torch.rand(1, 2, 16, 16))
    torch.testing.assert_close(attended, fused / 2)


def test_attention_weights_each_element_by_sigmoid_of_a_convolution_of_the_fused_field():
    net = FMIRNet(2, channels=(8, 16), num_scales=1).eval()
    _constant_heads(net, [0.0])
    torch.nn.init.normal_(net.heads[0].weight, std=0.5)  # a spatially varying Φ1
    torch.nn.init.normal_(net.attention.weight, std=0.5)
    x = torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        phi1 = net.scale_fields(x)[0]
        expected = torch.sigmoid(net.attention(phi1)) * phi1
        torch.testing.assert_close(net(x), expected)


@pytest.mark.parametrize("num_scales,expected", [(1, 1.0), (2, 3.0), (3, 7.0)])
def test_ablations_use_the_first_scales_only(num_scales, expected):
    """One shared head of constant 1 voxel on every grid: FMIRNet-1 = Φ1 = 1, FMIRNet-2 = Φ1 + Φ'2 =
    1 + 2, FMIRNet = 1 + 2 + 4 (each coarser field's values scaled by its upsampling factor)."""
    net = FMIRNet(2, channels=(8, 16), num_scales=num_scales, attention=False).eval()
    _constant_heads(net, [1.0])
    with torch.no_grad():
        out = net(torch.rand(1, 2, 16, 16))
    assert len(net.scale_fields(torch.rand(1, 2, 16, 16))) == num_scales
    torch.testing.assert_close(out, torch.full_like(out, expected))


def test_the_backbone_is_shared_across_scales():
    net = FMIRNet(2, channels=(8, 16))
    separate = FMIRNet(2, channels=(8, 16), separate_heads=True)
    backbone = sum(p.numel() for p in net.backbone.parameters())
    head = sum(p.numel() for p in net.heads[0].parameters())
    assert sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in net.parameters()) == 2 * head
    assert len(net.heads) == 1 and backbone > 10 * head


def test_resunet_pads_odd_grids_and_crops_back():
    net = ResUNet(2, channels=(8, 16, 16, 16)).eval()  # needs multiples of 8 inside
    x = torch.rand(1, 2, 10, 15)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 8, 10, 15)
    with torch.no_grad():
        assert net(torch.rand(1, 2, 16, 24)).shape == (1, 8, 16, 24)


def test_bad_inputs_name_the_shape():
    net = FMIRNet(2, channels=(8, 16))
    with pytest.raises(ValueError, match=r"\(B, 2, \*spatial\)"):
        net(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 2, 18, 16))
    with pytest.raises(ValueError, match="num_scales"):
        FMIRNet(2, num_scales=4)


@pytest.mark.parametrize("dims,size", [(2, (16, 24)), (3, (8, 8, 12))])
def test_torchscript_matches_eager(dims, size):
    net = FMIRNet(dims, channels=(8, 16), separate_heads=True).eval()
    for head in net.heads:
        torch.nn.init.normal_(head.weight, std=0.1)
    torch.nn.init.normal_(net.attention.weight, std=0.1)
    scripted = torch.jit.script(net)
    x = torch.rand(1, 2, *size)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_gradients_reach_every_part_and_a_few_steps_lower_the_paper_loss():
    torch.manual_seed(0)
    net = FMIRNet(2, channels=(8, 16))
    loss_fn = RegistrationLoss(2, image_loss="mse+1*ssim", regularizer="diffusion_sum", reg_weight=1e-5)
    fixed = torch.zeros(2, 1, 32, 32)
    fixed[:, :, 10:22, 12:24] = 1.0
    moving = torch.roll(fixed, shifts=(2, 1), dims=(2, 3))
    x = torch.cat([moving, fixed], dim=1)
    targets = x.clone()
    loss = loss_fn(net(x), targets)
    loss.backward()
    for name, p in net.named_parameters():
        if name.startswith("attention"):
            continue  # zero-initialised: its gradient is Φp-dependent but not zero only after the first step
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert float(net.heads[0].weight.grad.abs().sum()) > 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = float(loss)
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(net(x), targets)
        loss.backward()
        opt.step()
    assert float(loss) < first
    assert float(net.attention.weight.abs().sum()) > 0  # the attention convolution trains too
