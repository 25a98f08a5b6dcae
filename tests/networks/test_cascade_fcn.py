"""CascadeFCN (morphzoo.networks.nets.cascade_fcn): residual fields added coarse to fine, the moving
image warped by the previous estimate before each stage, stage counts, TorchScript, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from morphzoo.engines import RegistrationInferer
from morphzoo.losses import RegistrationLoss
from morphzoo.networks.blocks import warp_image
from morphzoo.networks.nets import CascadeFCN, resize_displacement


@pytest.mark.parametrize("dims,size", [(2, (16, 24)), (3, (8, 12, 16))])
def test_fields_per_stage_finest_first(dims, size):
    net = CascadeFCN(dims, channels=(8, 8)).eval()
    x = torch.rand(2, 2, *size)
    with torch.no_grad():
        for stages in (1, 2, 3):
            net.num_stages = stages
            fields = net(x, return_all=True)
            factors = [4, 2, 1][:stages][::-1]
            assert [tuple(f.shape) for f in fields] == [(2, dims, *[s // k for s in size]) for k in factors]
            final = net(x)
            assert final.shape == (2, dims, *size)
            torch.testing.assert_close(final, resize_displacement(fields[0], list(size)))
    assert float(final.abs().max()) < 1e-2  # field layers start at N(0, 1e-5): an almost-identity start


def test_residual_fields_add_up_with_rescaled_values():
    """Constant stage outputs (field layers zeroed, biases set): ψ1 = 1 voxel at 1/4, ψ2 = 0.5 at 1/2,
    ψ3 = 0.25 at full resolution give ψ'2 = 0.5 + 2·1 = 2.5 and ψ'3 = 0.25 + 2·2.5 = 5.25 (Eqs. 12-13)."""
    net = CascadeFCN(2, channels=(4,)).eval()
    for stage, value in zip(net.stages, (1.0, 0.5, 0.25)):
        torch.nn.init.zeros_(stage.flow.weight)
        stage.flow.bias.data = torch.tensor([value, -value])
    with torch.no_grad():
        fields = net(torch.rand(1, 2, 16, 16), return_all=True)
    for f, expected in zip(fields, (5.25, 2.5, 1.0)):
        torch.testing.assert_close(f[:, 0], torch.full_like(f[:, 0], expected))
        torch.testing.assert_close(f[:, 1], torch.full_like(f[:, 1], -expected))


def test_each_stage_sees_the_moving_image_warped_by_the_previous_estimate():
    net = CascadeFCN(2, channels=(4,)).eval()
    torch.nn.init.zeros_(net.stages[0].flow.weight)
    net.stages[0].flow.bias.data = torch.tensor([0.75, -0.5])  # ψ1: a shift on the 1/4 grid
    seen = {}
    net.stages[1].register_forward_hook(lambda m, inp, out: seen.setdefault("stage2", inp[0]))
    x = torch.rand(1, 2, 16, 24)
    with torch.no_grad():
        net(x)
        psi1 = net(x, return_all=True)[-1]
    up = resize_displacement(psi1, [16, 24])
    expected_moving = F.avg_pool2d(warp_image(x[:, :1], up), 2)
    torch.testing.assert_close(seen["stage2"][:, :1], expected_moving)
    torch.testing.assert_close(seen["stage2"][:, 1:], F.avg_pool2d(x[:, 1:], 2))
    assert not torch.allclose(expected_moving, F.avg_pool2d(x[:, :1], 2))


def test_torchscript_matches_eager_for_every_stage_count():
    net = CascadeFCN(2, channels=(8, 8)).eval()
    for stage in net.stages:  # non-trivial fields so that the warps between stages matter
        torch.nn.init.normal_(stage.flow.weight, std=0.1)
    scripted = torch.jit.script(net)
    x = torch.rand(1, 2, 16, 24)
    for stages in (1, 3):
        net.num_stages = stages
        scripted.num_stages = stages
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x))


def test_gradients_reach_the_stages_that_run_and_the_loss_trains_them():
    net = CascadeFCN(2, channels=(8,), num_stages=2, return_all=True)
    loss_fn = RegistrationLoss(2, image_loss="mse", reg_weight=0.01, scale_weights=[1.0, 0.5])
    x = torch.rand(2, 2, 16, 16)
    targets = torch.cat([x, (torch.rand(2, 2, 16, 16) > 0.5).float()], dim=1)
    loss = loss_fn(RegistrationInferer(return_all=True)(x, net), targets)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.stages[0].parameters())
    assert net.stages[1].flow.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.stages[2].parameters())  # stage 3 did not run


def test_inferer_brings_a_coarse_final_field_to_the_input_grid():
    net = CascadeFCN(2, channels=(4,), num_stages=1, return_all=True).eval()
    x = torch.rand(1, 2, 16, 24)
    with torch.no_grad():
        out = RegistrationInferer()(x, net)
        coarse = net(x)[0]
    assert out.shape == (1, 2, 16, 24)
    torch.testing.assert_close(out, resize_displacement(coarse, [16, 24]))


@pytest.mark.parametrize("kwargs,match", [
    ({"spatial_dims": 1}, "spatial_dims"),
    ({"in_channels": 3}, "in_channels"),
    ({"scales": (4, 3, 1)}, "scales"),
    ({"num_stages": 4}, "num_stages"),
])
def test_bad_construction_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CascadeFCN(**kwargs)


def test_bad_input_names_its_shape():
    net = CascadeFCN(2, channels=(4,))
    with pytest.raises(ValueError, match=r"divisible by 4"):
        net(torch.rand(1, 2, 18, 16))
    with pytest.raises(ValueError, match=r"\(B, 2, \*spatial\)"):
        net(torch.rand(1, 3, 16, 16))
