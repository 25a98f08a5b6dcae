"""ECA and frequency channel attention: kernel formula, analytic outputs, shapes, gradients, TorchScript."""

from __future__ import annotations

import math

import pytest
import torch

from morphzoo.networks.blocks import ECA, FrequencyChannelAttention, dct_basis, eca_kernel_size, lowest_frequencies


@pytest.mark.parametrize("channels,expected", [(2, 1), (8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)])
def test_eca_kernel_size_formula(channels, expected):
    t = int(abs(math.log2(channels) + 1) / 2)
    assert eca_kernel_size(channels) == expected == (t if t % 2 else t + 1)


def test_eca_kernel_size_rejects_zero_channels():
    with pytest.raises(ValueError, match="channels"):
        eca_kernel_size(0)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_eca_matches_hand_computation(spatial_dims):
    torch.manual_seed(0)
    c = 16
    eca = ECA(spatial_dims, c)
    x = torch.randn((2, c) + (5,) * spatial_dims)
    s = x.flatten(2).mean(2)  # (B, C)
    w = eca.conv.weight.view(-1)  # (k,)
    k = w.numel()
    sp = torch.nn.functional.pad(s, (k // 2, k // 2))
    attn = torch.sigmoid(torch.stack([(sp[:, i : i + k] * w).sum(1) for i in range(c)], dim=1))
    expected = x * attn.view(attn.shape + (1,) * spatial_dims)
    assert torch.allclose(eca(x), expected, atol=1e-6)


def test_eca_zero_conv_halves_input_and_has_gradients():
    eca = ECA(2, 8)
    torch.nn.init.zeros_(eca.conv.weight)
    x = torch.randn(1, 8, 4, 6, requires_grad=True)
    y = eca(x)
    assert torch.allclose(y, 0.5 * x)
    y.sum().backward()
    assert x.grad is not None and eca.conv.weight.grad is not None and eca.conv.weight.grad.abs().sum() > 0


def test_eca_rejects_wrong_channels_and_dims():
    eca = ECA(2, 8)
    with pytest.raises(ValueError, match=r"\(B, 8"):
        eca(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="got"):
        eca(torch.randn(1, 8, 5, 5, 5))
    with pytest.raises(ValueError, match="odd"):
        ECA(2, 8, kernel_size=4)


def test_lowest_frequencies_start_with_dc():
    assert lowest_frequencies(2, 4) == [(0, 0), (0, 1), (1, 0), (0, 2)]
    assert lowest_frequencies(3, 1) == [(0, 0, 0)]


def test_dct_basis_dc_is_ones_and_basis_is_orthogonal():
    assert torch.allclose(dct_basis((7, 7), (0, 0)), torch.ones(7, 7))
    b01, b10, b11 = dct_basis((7, 7), (0, 1)), dct_basis((7, 7), (1, 0)), dct_basis((7, 7), (1, 1))
    for a, b in ((b01, b10), (b01, b11), (b10, b11), (dct_basis((7, 7), (0, 0)), b01)):
        assert abs(float((a * b).sum())) < 1e-5


def test_frequency_attention_with_dc_only_equals_eca():
    torch.manual_seed(0)
    fca = FrequencyChannelAttention(2, 16, frequencies=[(0, 0)], dct_size=7)
    eca = ECA(2, 16)
    eca.conv.weight.data.copy_(fca.conv.weight.data)
    x = torch.randn(2, 16, 14, 21)  # multiples of 7: the pooled DC term is the exact mean
    assert torch.allclose(fca(x), eca(x), atol=1e-6)


def test_frequency_squeeze_sees_a_pattern_the_average_misses():
    fca = FrequencyChannelAttention(2, 2, frequencies=[(0, 0), (0, 1)], dct_size=7)
    pattern = dct_basis((7, 7), (0, 1))  # zero mean, varies along columns
    x = torch.stack([pattern, pattern])[None]  # both channels hold the pattern
    s = fca.squeeze(x)
    assert abs(float(s[0, 0])) < 1e-6  # DC component (channel group 0): the average is 0
    assert float(s[0, 1]) > 0.4  # the (0, 1) component picks the pattern up
    assert float(ECA(2, 2).squeeze(x).abs().max()) < 1e-6


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 32, 10, 15)), (3, (1, 8, 6, 9, 5))])
def test_frequency_attention_shapes_gradients_script(spatial_dims, shape):
    fca = FrequencyChannelAttention(spatial_dims, shape[1])
    x = torch.randn(shape, requires_grad=True)
    y = fca(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert fca.conv.weight.grad.abs().sum() > 0
    scripted = torch.jit.script(fca)
    assert torch.allclose(scripted(x), y, atol=1e-6)


def test_frequency_attention_rejects_bad_frequencies():
    with pytest.raises(ValueError, match="2-tuples"):
        FrequencyChannelAttention(2, 8, frequencies=[(0, 0, 0)])
    with pytest.raises(ValueError, match="at most one per channel"):
        FrequencyChannelAttention(2, 2, frequencies=[(0, 0), (0, 1), (1, 0)])
    with pytest.raises(ValueError, match="outside"):
        FrequencyChannelAttention(2, 8, frequencies=[(0, 9)], dct_size=7)
