"""FreezeParameters (morphzoo.engines.freeze): frozen parameters and norm statistics stay put
through training steps, the others train; an unknown prefix is refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine

from morphzoo.engines import FreezeParameters


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 3, padding=1))


def _train(net: nn.Module, prefixes, steps: int = 3) -> dict[str, torch.Tensor]:
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=0.1)

    def step(engine, batch):
        net.train()  # as SupervisedTrainer does every iteration
        opt.zero_grad()
        loss = net(batch).square().mean()
        loss.backward()
        opt.step()
        return float(loss)

    engine = Engine(step)
    FreezeParameters(net, prefixes).attach(engine)
    engine.run([torch.rand(2, 1, 8, 8) + 1.0 for _ in range(steps)], max_epochs=1)
    return before


def test_frozen_parameters_and_statistics_do_not_change():
    net = _net()
    before = _train(net, ["0.", "1."])
    after = net.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert not torch.equal(after["2.weight"], before["2.weight"])
    assert not net[0].weight.requires_grad and net[2].weight.requires_grad


def test_no_prefix_trains_everything():
    net = _net()
    before = _train(net, [])
    after = net.state_dict()
    assert all(not torch.equal(after[k], before[k]) for k in ("0.weight", "2.weight", "1.running_mean"))


def test_unknown_prefix_is_refused():
    with pytest.raises(ValueError, match="stages.0."):
        FreezeParameters(_net(), ["stages.0."])
