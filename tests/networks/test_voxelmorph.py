"""VoxelMorphBackbone (morphzoo.networks.nets.voxelmorph): shapes, widths, TorchScript, gradients."""

from __future__ import annotations

import pytest
import torch

from morphzoo.networks.nets.voxelmorph import VOXELMORPH_VARIANTS, VoxelMorphBackbone


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("dims,size", [(2, (16, 24)), (3, (16, 8, 16))])
def test_output_shape(dims, size):
    net = VoxelMorphBackbone(spatial_dims=dims, variant="vm1").eval()
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, dims, *size)
    # near-zero initial field (last conv ~ N(0, 1e-5), bias 0)
    assert float(y.abs().max()) < 1e-2


def test_vm1_vm2_widths_differ():
    vm1 = VoxelMorphBackbone(3, "vm1")
    vm2 = VoxelMorphBackbone(3, "vm2")
    assert _n_params(vm2) > _n_params(vm1)
    # the difference is the decoder head: (8, 8) vs (32, 16, 16) final convs
    assert VOXELMORPH_VARIANTS["vm1"][2] == (8, 8) and VOXELMORPH_VARIANTS["vm2"][2] == (32, 16, 16)
    with pytest.raises(ValueError):
        VoxelMorphBackbone(3, "vm3")


def test_torchscript_same_output():
    net = VoxelMorphBackbone(2, "vm1", flow_init_std=0.1).eval()  # larger init so the output is not ~0
    x = torch.randn(1, 2, 16, 16)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        a, b = net(x), scripted(x)
    assert float(a.abs().max()) > 1e-3
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception):
        scripted(torch.randn(1, 2, 12, 16))  # the size check survives scripting


@pytest.mark.parametrize("shape", [(1, 2, 12, 16), (1, 2, 17, 16), (1, 3, 16, 16), (1, 2, 16, 16, 16)])
def test_bad_input_raises(shape):
    net = VoxelMorphBackbone(2, "vm1")
    with pytest.raises(ValueError):
        net(torch.randn(*shape))


def test_gradient_reaches_every_parameter(assert_every_parameter_learns):
    torch.manual_seed(0)
    # with a near-zero field the last conv gets most of the signal
    assert_every_parameter_learns(VoxelMorphBackbone(3, "vm1"), torch.randn(1, 2, 8, 8, 8))
