"""Per-pair (instance) optimisation: improves the pair's loss, never touches the bundle's network."""

from __future__ import annotations

import torch

from morphzoo.engines import RegistrationInferer
from morphzoo.inference import InstanceOptimization, Registrar
from morphzoo.losses import RegistrationLoss
from morphzoo.networks.nets import VoxelMorphBackbone


def _pair(shift: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = lambda cy, cx: torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)  # noqa: E731
    return blob(14, 14)[None, None].float(), blob(14 + shift, 14 + shift)[None, None].float()


def test_instance_optimisation_lowers_the_pair_loss_and_leaves_network_untouched():
    torch.manual_seed(0)
    net = VoxelMorphBackbone(2, "vm1")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = RegistrationLoss(2, image_loss="mse", reg_weight=0.01)
    opt = InstanceOptimization(net, loss, steps=40, learning_rate=1e-3)
    mov, fix = _pair()
    ddf = opt(mov, fix)
    assert ddf.shape == (1, 2, 32, 32) and not ddf.requires_grad
    assert opt.last_losses[-1] < 0.5 * opt.last_losses[0], opt.last_losses[::10]
    with torch.no_grad():
        own = RegistrationInferer()(torch.cat([mov, fix], 1), net)
    pair = torch.cat([mov, fix], 1)
    assert float(loss(ddf, pair)) < float(loss(own, pair))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"bundle network parameter {k} changed")


def test_zero_steps_is_the_network_prediction_and_scratch_mode_reinitialises():
    torch.manual_seed(0)
    net = VoxelMorphBackbone(2, "vm1")
    mov, fix = _pair()
    with torch.no_grad():
        own = net(torch.cat([mov, fix], 1))
    torch.testing.assert_close(InstanceOptimization(net, RegistrationLoss(2, "mse"), steps=0)(mov, fix), own)
    scratch = InstanceOptimization(net, RegistrationLoss(2, "mse"), steps=0, from_scratch=True)(mov, fix)
    assert not torch.allclose(scratch, own)


def test_registrar_with_instance_optimisation_reduces_mse_on_the_fixed_grid():
    torch.manual_seed(0)
    net = VoxelMorphBackbone(2, "vm1")
    mov, fix = _pair()
    opt = InstanceOptimization(net, RegistrationLoss(2, image_loss="mse", reg_weight=0.01), steps=40, learning_rate=1e-3)
    reg = Registrar(net, 2, spatial_size=(32, 32), field_fn=opt, device="cpu")
    ddf = reg.predict_field(mov, fix)
    warped = reg.warp(mov, ddf)
    assert float(((warped - fix) ** 2).mean()) < 0.5 * float(((mov - fix) ** 2).mean())
