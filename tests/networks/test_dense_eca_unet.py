"""DenseECAUNet (morphzoo.networks.nets.dense_eca_unet): topology, shapes, ablation switches,
initial field, gradients, TorchScript."""

from __future__ import annotations

import pytest
import torch

from morphzoo.networks.blocks import ECA, eca_kernel_size
from morphzoo.networks.nets import DenseECAUNet, VoxelMorphBackbone, dense_eca_nodes


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _conv_params(c_in: int, c_out: int, dims: int) -> int:
    return c_in * c_out * 3**dims + c_out


def test_node_topology():
    # UNet++ with 4 levels: 4 + 3 + 2 + 1 decoder nodes, ordered by column
    nodes = dense_eca_nodes(4)
    assert len(nodes) == 10 and nodes[:4] == [(0, 1), (1, 1), (2, 1), (3, 1)] and nodes[-1] == (0, 4)
    for k, (i, j) in enumerate(nodes):  # X(i+1, j-1) is computed before X(i, j)
        assert j == 1 or nodes.index((i + 1, j - 1)) < k
    # plain U-Net: the decoder path only
    assert dense_eca_nodes(4, dense=False) == [(3, 1), (2, 2), (1, 3), (0, 4)]
    with pytest.raises(ValueError):
        dense_eca_nodes(0)


@pytest.mark.parametrize("dims,size", [(2, (32, 48)), (3, (16, 16, 32))])
@pytest.mark.parametrize("use_eca,dense", [(True, True), (False, True), (True, False), (False, False)])
def test_output_shape_and_near_zero_initial_field(dims, size, use_eca, dense):
    torch.manual_seed(0)
    net = DenseECAUNet(spatial_dims=dims, use_eca=use_eca, dense=dense).eval()
    x = torch.rand(2, 2, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, dims, *size) and y.dtype == torch.float32
    # flow conv ~ N(0, 1e-5), bias 0: the initial field is (nearly) the identity
    assert 0.0 < float(y.abs().max()) < 1e-3
    assert float(DenseECAUNet(dims, flow_init_std=0.1).eval()(x).abs().max()) > 1e-2  # the check can fail


def test_ablation_switches_change_parameter_count_as_expected():
    dims = 2
    full = _n_params(DenseECAUNet(dims, use_eca=True, dense=True))
    no_eca = _n_params(DenseECAUNet(dims, use_eca=False, dense=True))
    no_dense = _n_params(DenseECAUNet(dims, use_eca=True, dense=False))
    plain = _n_params(DenseECAUNet(dims, use_eca=False, dense=False))
    # ECA: one bias-free 1D conv of eca_kernel_size(C) weights per decoder node, C = channels of the upsampled input
    enc, dec = (16, 32, 32, 32, 32), (32, 32, 32, 32)
    width = {(i, 0): c for i, c in enumerate(enc)}
    width.update({(i, j): dec[i] for i, j in dense_eca_nodes(4)})
    eca_dense = sum(eca_kernel_size(width[(i + 1, j - 1)]) for i, j in dense_eca_nodes(4))
    eca_plain = sum(eca_kernel_size(width[(i + 1, j - 1)]) for i, j in dense_eca_nodes(4, dense=False))
    assert full - no_eca == eca_dense == 10 * 3
    assert no_dense - plain == eca_plain == 4 * 3
    # dense: 6 extra nested nodes, and wider inputs (all earlier nodes of the level) for the path nodes
    extra_nodes = sum(_conv_params(sum(width[(i, k)] for k in range(j)) + width[(i + 1, j - 1)], dec[i], dims)
                      for i, j in dense_eca_nodes(4) if i + j < 4)
    wider_inputs = sum((sum(width[(i, k)] for k in range(1, j))) * dec[i] * 3**dims for i, j in dense_eca_nodes(4, dense=False))
    assert no_eca - plain == extra_nodes + wider_inputs
    assert plain < no_dense < no_eca < full


def test_plain_variant_is_voxelmorph2_with_four_poolings():
    """dense=False, use_eca=False: VoxelMorph-2's widths (encoder 16-32-32-32, decoder 32-32-32-32-32,
    tail 16-16) with the paper's 4 poolings. MONAI's VoxelMorphUNet pools 3 times and has one more
    full-resolution conv (32 -> 32); this net has one more level instead: a bottleneck conv (32 -> 32)
    at 1/16 and a decoder node (32 + 32 -> 32) at 1/8. The two 32 -> 32 convs cancel."""
    plain = _n_params(DenseECAUNet(2, use_eca=False, dense=False))
    vm2 = _n_params(VoxelMorphBackbone(2, "vm2"))
    assert plain - vm2 == _conv_params(64, 32, 2)


def test_eca_applied_to_the_upsampled_tensor():
    net = DenseECAUNet(2)
    node = net.decoder[0]
    assert isinstance(node.attention, ECA) and node.attention.channels == 32
    assert not isinstance(DenseECAUNet(2, use_eca=False).decoder[0].attention, ECA)
    # every ECA sees its node's upsampled input, at the node's resolution
    seen = []
    for k, n in enumerate(net.decoder):
        n.attention.register_forward_hook(lambda m, inp, out, k=k: seen.append((k, tuple(inp[0].shape))))
    net(torch.rand(1, 2, 32, 48))
    levels = [i for i, _ in dense_eca_nodes(4)]
    assert [k for k, _ in seen] == list(range(10))
    assert all(shape == (1, 32, 32 // 2**levels[k], 48 // 2**levels[k]) for k, shape in seen), seen


@pytest.mark.parametrize("dims,size", [(2, (32, 32)), (3, (16, 16, 16))])
@pytest.mark.parametrize("dense", [True, False])
def test_gradient_reaches_every_parameter(dims, size, dense, assert_every_parameter_learns):
    torch.manual_seed(0)
    assert_every_parameter_learns(DenseECAUNet(dims, dense=dense), torch.rand(1, 2, *size))


@pytest.mark.parametrize("dims,size", [(2, (32, 48)), (3, (16, 16, 16))])
def test_torchscript_same_output(dims, size):
    torch.manual_seed(0)
    for dense in (True, False):
        net = DenseECAUNet(dims, dense=dense, flow_init_std=0.1).eval()
        scripted = torch.jit.script(net)
        x = torch.rand(1, 2, *size)
        with torch.no_grad():
            a, b = net(x), scripted(x)
        assert float(a.abs().max()) > 1e-3
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="divisible by 16"):
        scripted(torch.rand(1, 2, *[s + 8 for s in size]))  # the size check survives scripting


@pytest.mark.parametrize("shape", [(1, 2, 24, 32), (1, 3, 32, 32), (1, 2, 32, 32, 32), (2, 32, 32)])
def test_bad_input_raises(shape):
    with pytest.raises(ValueError):
        DenseECAUNet(2)(torch.rand(*shape))


def test_bad_arguments():
    with pytest.raises(ValueError, match="spatial_dims"):
        DenseECAUNet(1)
    with pytest.raises(ValueError, match="decoder_channels"):
        DenseECAUNet(2, encoder_channels=(8, 16, 16), decoder_channels=(16,))
    net = DenseECAUNet(2, encoder_channels=(8, 16, 16), decoder_channels=(16, 16), final_conv_channels=())
    assert net(torch.rand(1, 2, 8, 12)).shape == (1, 2, 8, 12)  # depth 2: multiples of 4
