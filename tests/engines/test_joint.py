"""Joint registration + segmentation training (morphzoo.engines.joint) on analytic slice pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader

from morphzoo.engines import JointRegSegLoss, JointRegSegTrainer
from morphzoo.losses import RegistrationLoss


class ShiftNet(nn.Module):
    """Pair -> a constant displacement of ``shift`` voxels along the first axis, plus a learnable
    near-zero correction (so it has parameters to train)."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.zeros(x.shape[0], 2, *x.shape[2:])
        base[:, 0] = self.shift
        return base + self.conv(x)


def _pairs(n: int = 4, size: int = 16) -> list[dict]:
    """Moving: a bright square with label 1; fixed: the same square 2 pixels lower (unlabelled)."""
    items = []
    for k in range(n):
        mov = torch.zeros(1, size, size)
        mov[:, 4:8, 4 + k : 8 + k] = 1.0
        fix = torch.roll(mov, 2, dims=1)
        items.append({"moving": mov, "moving_label": (mov > 0).float(), "fixed": fix})
    return items


def _trainer(registration: nn.Module | None, train_registration: bool = True, iterations: int = 3):
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    reg_loss = RegistrationLoss(spatial_dims=2, image_loss="mse", regularizer="diffusion", reg_weight=0.1) if registration else None
    loss = JointRegSegLoss(DiceCELoss(to_onehot_y=True, softmax=True), reg_loss)
    reg_opt = torch.optim.SGD(registration.parameters(), lr=0.1) if registration is not None and train_registration else None
    trainer = JointRegSegTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(_pairs(), batch_size=2), segmenter=seg,
        seg_optimizer=torch.optim.SGD(seg.parameters(), lr=0.1), loss_function=loss, registration=registration,
        reg_optimizer=reg_opt, epoch_length=iterations,
    )
    return trainer, seg, loss


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_joint_step_updates_both_networks_and_trains_on_propagated_labels():
    reg = ShiftNet(shift=-1.0)  # half-way: the image loss has a gradient
    trainer, seg, loss = _trainer(reg)
    seg0, reg0 = _params(seg), _params(reg)
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(seg0, _params(seg)))
    assert any(not torch.equal(a, b) for a, b in zip(reg0, _params(reg)))
    assert {"seg_real", "seg_propagated", "registration"} <= set(loss.last_terms)

    reg = ShiftNet(shift=-2.0)  # output(x) = moving(x - 2): the square moves 2 pixels down, onto the fixed one
    trainer, seg, loss = _trainer(reg)
    trainer.run()
    out = trainer.state.output  # decollated: one dict per slice, real slices first, then propagated
    labels = torch.stack([o["label"] for o in out])
    batch = _pairs()[:2]  # 3 iterations over a 2-batch loader: the last batch is the first one again
    assert labels.shape[0] == 4
    for k, item in enumerate(batch):
        torch.testing.assert_close(labels[k], item["moving_label"])
    for k, item in enumerate(batch):  # the propagated label is the moving label carried onto the fixed square
        assert torch.equal(labels[2 + k], (item["fixed"] > 0).float()), k


def test_segmentation_loss_never_moves_a_frozen_registration_network():
    reg = ShiftNet(shift=-2.0)
    trainer, seg, loss = _trainer(reg, train_registration=False)
    reg0 = _params(reg)
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(reg0, _params(reg)))
    assert all(p.grad is None for p in reg.parameters())
    assert "seg_propagated" in loss.last_terms and "registration" not in loss.last_terms


def test_without_registration_it_is_the_supervised_only_baseline():
    trainer, seg, loss = _trainer(None)
    trainer.run()
    assert set(loss.last_terms) == {"seg_real"}
    assert len(trainer.state.output) == 2  # only the annotated slices


def test_bad_batches_and_missing_reg_loss_fail_clearly():
    trainer, _, loss = _trainer(ShiftNet(0.0))
    with pytest.raises(ValueError, match="moving_label"):
        trainer._iteration(trainer, {"moving": torch.zeros(1, 1, 8, 8), "fixed": torch.zeros(1, 1, 8, 8)})
    with pytest.raises(RuntimeError, match="reg_loss"):
        JointRegSegLoss(DiceCELoss()).registration(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_extent_prior_background_slices_get_an_empty_label_with_and_without_registration():
    items = _pairs()
    for it, flag in zip(items, (1.0, 0.0, 1.0, 0.0)):
        it["fixed_background"] = torch.tensor([flag])
    for reg in (ShiftNet(shift=-2.0), None):
        torch.manual_seed(0)
        seg = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
        reg_loss = RegistrationLoss(spatial_dims=2, image_loss="mse", regularizer="diffusion") if reg is not None else None
        trainer = JointRegSegTrainer(
            device="cpu", max_epochs=1, train_data_loader=DataLoader(items, batch_size=4), segmenter=seg,
            seg_optimizer=torch.optim.SGD(seg.parameters(), lr=0.1),
            loss_function=JointRegSegLoss(DiceCELoss(to_onehot_y=True, softmax=True), reg_loss), registration=reg,
            reg_optimizer=None, epoch_length=1,
        )
        trainer.run()
        labels = [o["label"] for o in trainer.state.output]
        if reg is not None:  # 4 real, then 4 propagated: items 0 and 2 are background slices
            assert len(labels) == 8
            assert labels[4].sum() == 0 and labels[6].sum() == 0
            assert torch.equal(labels[5], (items[1]["fixed"] > 0).float())
        else:  # 4 real, then the 2 background slices with empty labels
            assert len(labels) == 6 and labels[4].sum() == 0 and labels[5].sum() == 0
