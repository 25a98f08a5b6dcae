"""bf16 autocast of the training forward pass: the setting, the fallback and the fp32 outputs."""

import logging

import pytest
import torch
import torch.nn as nn

import morphzoo.engines.precision as precision
from morphzoo.engines import RegistrationInferer, bf16_supported, resolve_autocast


def test_resolve_autocast_settings(monkeypatch, caplog):
    assert resolve_autocast("fp32") is None and resolve_autocast(None) is None
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_autocast("fp16")
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": True)
    assert resolve_autocast("bf16") is torch.bfloat16 and resolve_autocast("AUTO") is torch.bfloat16
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": False)
    assert resolve_autocast("auto") is None
    with caplog.at_level(logging.WARNING, logger="morphzoo.engines.precision"):
        assert resolve_autocast("bf16") is None  # emulated bf16 would be slower than fp32
    assert "no native bf16" in caplog.text


def test_bf16_supported_answers_a_bool():
    assert isinstance(bf16_supported("cpu"), bool)
    assert bf16_supported("meta") is False


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        self.seen = []
        self.conv.register_forward_hook(lambda m, i, o: self.seen.append(o.dtype))

    def forward(self, x):
        return self.conv(x)


def test_inferer_bf16_forward_fp32_field(monkeypatch):
    x = torch.rand(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    net = _Net()
    ref = RegistrationInferer()(x, net)
    assert net.seen == [torch.float32] and ref.dtype == torch.float32

    # forced on (emulated where the CPU lacks bf16, so this runs on any machine)
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": True)
    inferer = RegistrationInferer(precision="bf16")
    out = inferer(x, net)
    assert net.seen[-1] == torch.bfloat16, "the convolution did not run in bf16"
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert not torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.02)
    # gradients reach the fp32 weights
    out.sum().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32

    # no native bf16: 'auto' is plain fp32, bit for bit
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": False)
    torch.testing.assert_close(RegistrationInferer(precision="auto")(x, net), ref, rtol=0, atol=0)
    with pytest.raises(ValueError):
        RegistrationInferer(precision="half")
