"""StepTimer: per-stage times of a MONAI SupervisedTrainer's iterations."""

from __future__ import annotations

import math
import time

import pytest
import torch
from monai.engines import SupervisedTrainer

from morphzoo.engines import STEP_STAGES, StepTimer


class _SlowNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return self.conv(x)


class _SlowLoss(torch.nn.Module):
    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return torch.nn.functional.cross_entropy(pred, label[:, 0].long())


def _trainer(iterations: int) -> SupervisedTrainer:
    torch.manual_seed(0)
    data = [{"image": torch.rand(1, 8, 8), "label": (torch.rand(1, 8, 8) > 0.5).float()} for _ in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    net = _SlowNet()
    return SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, epoch_length=iterations, train_data_loader=loader, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=_SlowLoss(),
    )


def test_stages_of_a_supervised_trainer():
    trainer = _trainer(4)
    timer = StepTimer(warmup=1)
    timer.attach(trainer)
    trainer.run()
    assert len(timer.records) == 4
    for rec in timer.records:
        assert set(rec) == {*STEP_STAGES, "cpu"} and not any(math.isnan(v) for v in rec.values())
        assert sum(rec[s] for s in STEP_STAGES if s != "total") == pytest.approx(rec["total"], rel=1e-9)
        assert rec["forward"] >= 30.0 and rec["loss"] >= 20.0  # the sleeps are lower bounds
        assert 0.0 <= rec["cpu"] <= rec["total"] - 40.0  # sleeping takes wall time, not CPU time
    s = timer.summary()
    assert s["steps"] == 3 and s["total_ms"] >= 50.0 and s["cpu_ms"] < s["total_ms"]


def test_summary_without_timed_steps():
    timer = StepTimer(warmup=5)
    with pytest.raises(RuntimeError, match="warm-up"):
        timer.summary()
