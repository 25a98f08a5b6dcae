"""SearchMorph building blocks: diamond offsets, correlation search (local vs all-pairs, brute
force, channel order vs MONAI ``Warp``, pyramid levels), convex/linear upsampling, ConvGRU and
the SearchMorph network (shapes, ablations, TorchScript, gradients, validation)."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import Warp

from morphzoo.networks.blocks.correlation import CorrelationSearch, diamond_offsets, voxel_to_grid
from morphzoo.networks.blocks.field_update import ConvGRU
from morphzoo.networks.blocks.field_upsample import ConvexUpsample, convex_mask_channels, linear_upsample2
from morphzoo.networks.nets.searchmorph import SearchMorph

torch.set_num_threads(1)

# tiny widths for the 3D network tests (keeps them fast on one CPU thread)
_TINY = dict(channels=(4, 8, 8, 8), decoder_channels=(8, 8), context_channels=8, motion_channels=16)


def _octahedral(r: int) -> int:
    # number of integer points with |d|_1 <= r in 3D: (2r+1)(2r^2+2r+3)/3
    return (2 * r + 1) * (2 * r * r + 2 * r + 3) // 3


def _search_map(search, h_fixed, h_moving, ddf):
    return search.lookup(search.pyramid(h_fixed, h_moving), h_fixed, ddf)


def _offset_index(search, delta) -> int:
    target = torch.tensor([float(v) for v in delta], dtype=search.offsets.dtype)
    hits = (search.offsets == target).all(dim=1).nonzero().flatten()
    assert hits.numel() == 1, f"offset {delta} not found exactly once"
    return int(hits[0])


def _brute_corr(h_fixed, h_moving):
    """C[b, x, y] = <hF(x), hM(y)> / sqrt(D), flattened positions, explicit loops over channels."""
    b, d = h_fixed.shape[:2]
    f = h_fixed.reshape(b, d, -1)
    m = h_moving.reshape(b, d, -1)
    c = torch.zeros(b, f.shape[2], m.shape[2], dtype=h_fixed.dtype)
    for k in range(d):
        c += f[:, k, :, None] * m[:, k, None, :]
    return c / math.sqrt(d)


# --------------------------------------------------------------------------- diamond offsets


@pytest.mark.parametrize("r", range(5))
def test_diamond_offsets_2d(r):
    off = diamond_offsets(r, 2)
    assert off.shape == (2 * r * r + 2 * r + 1, 2)
    assert bool((off.abs().sum(1) <= r).all())
    assert len({tuple(p) for p in off.tolist()}) == off.shape[0]
    assert [0.0, 0.0] in off.tolist()
    # every lattice point inside the diamond is present
    assert off.shape[0] == sum(1 for p in itertools.product(range(-r, r + 1), repeat=2) if abs(p[0]) + abs(p[1]) <= r)


@pytest.mark.parametrize("r,count", [(0, 1), (1, 7), (2, 25), (3, 63)])
def test_diamond_offsets_3d(r, count):
    off = diamond_offsets(r, 3)
    assert off.shape == (count, 3) and count == _octahedral(r)
    assert bool((off.abs().sum(1) <= r).all())
    assert len({tuple(p) for p in off.tolist()}) == count
    assert [0.0, 0.0, 0.0] in off.tolist()


def test_diamond_offsets_errors():
    with pytest.raises(ValueError, match="radius"):
        diamond_offsets(-1, 2)
    for dims in (1, 4):
        with pytest.raises(ValueError, match="spatial_dims"):
            diamond_offsets(2, dims)
    with pytest.raises(ValueError, match="mode"):
        CorrelationSearch(2, 2, mode="dense")
    with pytest.raises(ValueError, match="num_levels"):
        CorrelationSearch(2, 2, num_levels=0)


def test_voxel_to_grid_centres_and_order():
    # voxel centres 0 and S-1 map to -1 + 1/S and 1 - 1/S; output reversed to grid_sample's (x, y)
    pos = torch.tensor([[0.0, 0.0], [3.0, 5.0]])
    g = voxel_to_grid(pos, [4, 6])
    assert torch.allclose(g[0], torch.tensor([-1 + 1 / 6, -1 + 1 / 4]))
    assert torch.allclose(g[1], torch.tensor([1 - 1 / 6, 1 - 1 / 4]))


# --------------------------------------------------------------------------- local == all-pairs


@pytest.mark.parametrize(
    "dims,size,radius,levels",
    [
        (2, (9, 11), 0, 1),
        (2, (9, 11), 2, 3),
        (2, (13, 10), 3, 4),
        (2, (16, 15), 1, 2),
        (3, (7, 9, 6), 1, 2),
        (3, (9, 8, 11), 2, 3),
        (3, (8, 8, 8), 1, 4),
    ],
)
def test_local_equals_all_pairs_float64(dims, size, radius, levels):
    g = torch.Generator().manual_seed(radius * 10 + levels + dims)
    hf = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    hm = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    ddf = 3.0 * torch.randn(2, dims, *size, generator=g, dtype=torch.float64)
    local = CorrelationSearch(dims, radius, levels, "local")
    pairs = CorrelationSearch(dims, radius, levels, "all_pairs")
    a = _search_map(local, hf, hm, ddf)
    b = _search_map(pairs, hf, hm, ddf)
    assert a.shape == (2, levels * diamond_offsets(radius, dims).shape[0], *size)
    assert a.shape == b.shape and local.out_channels == a.shape[1]
    assert float((a - b).abs().max()) < 1e-10
    assert float(a.abs().max()) > 0.1  # not trivially zero


def test_local_equals_all_pairs_float32_paper_size():
    """The issue's check: 160x192 input -> 80x96 features, D=4, r=3, 4 levels, same search map."""
    g = torch.Generator().manual_seed(0)
    hf = torch.randn(1, 4, 80, 96, generator=g)
    hm = torch.randn(1, 4, 80, 96, generator=g)
    ddf = 4.0 * torch.randn(1, 2, 80, 96, generator=g)
    with torch.no_grad():
        a = _search_map(CorrelationSearch(2, 3, 4, "local"), hf, hm, ddf)
        b = _search_map(CorrelationSearch(2, 3, 4, "all_pairs"), hf, hm, ddf)
    assert a.shape == (1, 4 * 25, 80, 96)
    assert float((a - b).abs().max()) < 1e-5


# --------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("mode", ["local", "all_pairs"])
@pytest.mark.parametrize("dims,size", [(2, (5, 6)), (3, (4, 5, 3))])
def test_brute_force_level0(mode, dims, size):
    g = torch.Generator().manual_seed(1)
    d = 3
    hf = torch.randn(1, d, *size, generator=g, dtype=torch.float64)
    hm = torch.randn(1, d, *size, generator=g, dtype=torch.float64)
    corr = _brute_corr(hf, hm)[0]  # (n, n), row-major positions
    search = CorrelationSearch(dims, 2, 2, mode)
    positions = list(itertools.product(*[range(s) for s in size]))
    flat = {p: i for i, p in enumerate(positions)}

    # zero field, level 0, offset 0 -> C(x, x)
    smap = _search_map(search, hf, hm, torch.zeros(1, dims, *size, dtype=torch.float64))
    k0 = _offset_index(search, [0] * dims)
    for p in positions:
        assert abs(float(smap[(0, k0) + p]) - float(corr[flat[p], flat[p]])) < 1e-12

    # integer constant shift s: offset delta -> C(x, x + s + delta), zero outside the volume
    shift = [1, -1, 2][:dims]
    ddf = torch.tensor(shift, dtype=torch.float64).view(1, dims, *[1] * dims).expand(1, dims, *size).contiguous()
    smap = _search_map(search, hf, hm, ddf)
    checked_outside = 0
    for k, delta in enumerate(search.offsets.tolist()):
        for p in positions:
            q = tuple(int(p[i] + shift[i] + delta[i]) for i in range(dims))
            inside = all(0 <= q[i] < size[i] for i in range(dims))
            expected = float(corr[flat[p], flat[q]]) if inside else 0.0
            checked_outside += not inside
            assert abs(float(smap[(0, k) + p]) - expected) < 1e-12, (delta, p)
    assert checked_outside > 0

    # half-voxel field along the last axis: linear interpolation of the two neighbours (zeros outside)
    half = torch.zeros(1, dims, *size, dtype=torch.float64)
    half[:, -1] = 0.5
    smap = _search_map(search, hf, hm, half)
    for p in positions:
        q0 = p
        q1 = p[:-1] + (p[-1] + 1,)
        c1 = float(corr[flat[p], flat[q1]]) if q1[-1] < size[-1] else 0.0
        expected = 0.5 * (float(corr[flat[p], flat[q0]]) + c1)
        assert abs(float(smap[(0, k0) + p]) - expected) < 1e-12


@pytest.mark.parametrize("mode", ["local", "all_pairs"])
@pytest.mark.parametrize("dims,size", [(2, (13, 11)), (3, (9, 8, 7))])
def test_brute_force_levels_block_means(mode, dims, size):
    """Level l at a fine position p = 2**l j (zero field) and offset delta reads the average of h_M over
    the level-l cell j + delta (fine positions 2**l c .. 2**l (c+1) - 1; odd sizes floor)."""
    g = torch.Generator().manual_seed(2)
    d = 2
    hf = torch.randn(1, d, *size, generator=g, dtype=torch.float64)
    hm = torch.randn(1, d, *size, generator=g, dtype=torch.float64)
    levels, radius = 3, 1
    search = CorrelationSearch(dims, radius, levels, mode)
    smap = _search_map(search, hf, hm, torch.zeros(1, dims, *size, dtype=torch.float64))
    kk = search.num_offsets
    for lvl in range(1, levels):
        s = 2**lvl
        lsize = [n // s for n in size]
        for j in itertools.product(*[range(n) for n in lsize]):
            p = tuple(s * v for v in j)
            for k, delta in enumerate(search.offsets.tolist()):
                c = [j[i] + int(delta[i]) for i in range(dims)]
                if all(0 <= c[i] < lsize[i] for i in range(dims)):
                    sl = tuple(slice(s * c[i], s * (c[i] + 1)) for i in range(dims))
                    block = hm[(0, slice(None)) + sl].reshape(d, -1).mean(1)
                    expected = float((hf[(0, slice(None)) + p] * block).sum()) / math.sqrt(d)
                else:
                    expected = 0.0
                got = float(smap[(0, lvl * kk + k) + p])
                assert abs(got - expected) < 1e-12, (lvl, j, delta)


@pytest.mark.parametrize("mode", ["local", "all_pairs"])
def test_pyramid_level_mapping_p_over_2(mode):
    """h_M constant on 2x2 blocks: level 1 at p = 2j equals level 0 (and its 2x2 average), offsets
    scale by 2, and an odd fine position reads half-way between two cells (p -> p / 2)."""
    g = torch.Generator().manual_seed(3)
    d, h, w = 3, 8, 12
    blocks = torch.randn(1, d, h // 2, w // 2, generator=g, dtype=torch.float64)
    hm = blocks.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    hf = torch.randn(1, d, h, w, generator=g, dtype=torch.float64)
    search = CorrelationSearch(2, 2, 2, mode)
    kk = search.num_offsets
    smap = _search_map(search, hf, hm, torch.zeros(1, 2, h, w, dtype=torch.float64))
    lvl0, lvl1 = smap[:, :kk], smap[:, kk:]
    k0 = _offset_index(search, [0, 0])
    k_right = _offset_index(search, [0, 1])
    k_down = _offset_index(search, [1, 0])
    k_diag = _offset_index(search, [1, 1])
    even = (slice(None), slice(0, h, 2), slice(0, w, 2))
    # level 1 at even positions == level-0 value == average of the 2x2 level-0 neighbourhood
    avg = (lvl0[:, k0] + lvl0[:, k_right] + lvl0[:, k_down] + lvl0[:, k_diag]) / 4
    assert torch.allclose(lvl1[:, k0][even], lvl0[:, k0][even], atol=1e-12)
    assert torch.allclose(lvl1[:, k0][even], avg[even], atol=1e-12)
    # a level-1 offset of 1 cell == a level-0 offset of 2 voxels
    k1_right = _offset_index(search, [0, 1])
    k0_right2 = _offset_index(search, [0, 2])
    assert torch.allclose(lvl1[:, k1_right][even][..., :-1], lvl0[:, k0_right2][even][..., :-1], atol=1e-12)
    # odd row 2i+1 -> level-1 row i + 0.5: mean of blocks i and i+1 (zero past the last block)
    nxt = torch.cat([blocks[:, :, 1:], torch.zeros_like(blocks[:, :, :1])], dim=2)
    mid = 0.5 * (blocks + nxt)  # (1, d, h/2, w/2)
    expected = (hf[:, :, 1::2, 0::2] * mid).sum(1) / math.sqrt(d)
    assert torch.allclose(lvl1[:, k0, 1::2, 0::2], expected, atol=1e-12)
    # ... which differs from reading cell i exactly (another mapping convention would)
    assert not torch.allclose(lvl1[:, k0, 1::2, 0::2], (hf[:, :, 1::2, 0::2] * blocks).sum(1) / math.sqrt(d))


# --------------------------------------------------------------------------- channel order vs MONAI Warp


@pytest.mark.parametrize("mode", ["local", "all_pairs"])
def test_channel_order_matches_monai_warp(mode):
    """h_M(y) = h_F(y - t e_0) (shift along array axis 0 only): the zero-field search map peaks at
    offset (t, 0), axis-0 component first, and MONAI Warp with ddf = (t, 0) in channels (0, 1) aligns
    a moving image built the same way. RAFT's (x, y) order would put the peak at (0, t)."""
    t, d, h, w = 2, 32, 16, 20
    g = torch.Generator().manual_seed(4)
    hf = torch.randn(1, d, h, w, generator=g)
    hf = hf / hf.norm(dim=1, keepdim=True)
    hm = torch.roll(hf, shifts=t, dims=2)  # hm[y0, y1] = hf[y0 - t, y1]
    search = CorrelationSearch(2, 3, 1, mode)
    smap = _search_map(search, hf, hm, torch.zeros(1, 2, h, w))
    interior = smap[0, :, 3:-3, 3:-3]
    # at every interior voxel the peak is at offset (t, 0)
    best = search.offsets[interior.argmax(0)]
    assert bool((best == torch.tensor([float(t), 0.0]).view(1, 1, 2)).all())
    k_axis0 = _offset_index(search, [t, 0])
    k_axis1 = _offset_index(search, [0, t])
    assert float(interior[k_axis0].min()) > float(interior[k_axis1].max())

    # following the field ddf = (t, 0): the offset-0 entry now holds the peak |hF(x)|^2 / sqrt(D)
    ddf = torch.zeros(1, 2, h, w)
    ddf[:, 0] = float(t)
    follow = _search_map(search, hf, hm, ddf)
    k0 = _offset_index(search, [0, 0])
    assert torch.allclose(follow[0, k0, : h - t], torch.full((h - t, w), 1.0 / math.sqrt(d)), atol=1e-5)

    # MONAI Warp: warped(x) = moving(x + ddf(x)); the same ddf (channel 0 = axis 0) aligns the images
    img = torch.randn(1, 1, h, w, generator=g)
    moving = torch.roll(img, shifts=t, dims=2)
    warp = Warp(mode="bilinear", padding_mode="zeros")
    warped = warp(moving, ddf)
    assert torch.allclose(warped[..., : h - t, :], img[..., : h - t, :], atol=1e-5)
    swapped = warp(moving, ddf.flip(1))  # RAFT (x, y) order: wrong axis
    assert float((swapped - img)[..., : h - t, t:].abs().max()) > 0.5


# --------------------------------------------------------------------------- errors


def test_correlation_shape_errors():
    search = CorrelationSearch(2, 1, 2)
    hf = torch.randn(1, 4, 5, 6)
    with pytest.raises(ValueError, match=re.escape(str(torch.Size([1, 4, 5, 7])))):
        search.pyramid(hf, torch.randn(1, 4, 5, 7))
    with pytest.raises(ValueError, match=re.escape(str(torch.Size([1, 3, 5, 6])))):
        search.pyramid(hf, torch.randn(1, 3, 5, 6))
    with pytest.raises(ValueError, match="spatial dims"):
        search.pyramid(torch.randn(1, 4, 5, 6, 2), torch.randn(1, 4, 5, 6, 2))
    pyr = search.pyramid(hf, torch.randn(1, 4, 5, 6))
    for bad in ([1, 2, 5, 5], [1, 3, 5, 6], [2, 2, 5, 6]):
        with pytest.raises(ValueError, match=re.escape(str(torch.Size(bad)))):
            search.lookup(pyr, hf, torch.zeros(bad))


# --------------------------------------------------------------------------- upsampling


@pytest.mark.parametrize("dims", [2, 3])
def test_convex_upsample_uniform_weights_constant_field(dims):
    size = (4, 5, 3)[:dims]
    c = torch.tensor([1.5, -0.75, 0.25][:dims], dtype=torch.float64).view(1, dims, *[1] * dims)
    ddf = c.expand(2, dims, *size).contiguous()
    mask = torch.zeros(2, convex_mask_channels(dims), *size, dtype=torch.float64)
    up = ConvexUpsample(dims)(ddf, mask)
    assert up.shape == (2, dims, *[2 * s for s in size])
    inner = (slice(None), slice(None)) + tuple(slice(2, 2 * s - 2) for s in size)
    assert torch.allclose(up[inner], (2 * c).expand_as(up[inner]), atol=1e-12)
    # the border sees RAFT's zero padding
    assert not torch.allclose(up, (2 * c).expand_as(up))


@pytest.mark.parametrize("dims", [2, 3])
def test_convex_upsample_centre_weight_is_nearest(dims):
    size = (3, 4, 5)[:dims]
    g = torch.Generator().manual_seed(5)
    ddf = torch.randn(1, dims, *size, generator=g)
    up = ConvexUpsample(dims)
    centre = (3**dims - 1) // 2  # (1, 1[, 1]) in the neighbour-major order
    mask = torch.zeros(1, convex_mask_channels(dims), *size)
    ch = 2**dims
    mask[:, centre * ch : (centre + 1) * ch] = 1e4
    out = up(ddf, mask)
    nearest = F.interpolate(2.0 * ddf, scale_factor=2, mode="nearest")
    assert out.shape == nearest.shape
    assert torch.equal(out, nearest)


@pytest.mark.parametrize("dims", [2, 3])
def test_convex_upsample_child_order(dims):
    """Child c (bits c_k along axis k) weighted fully on the neighbour at offset 2 c_k - 1: fine voxel
    2 i + c reads 2 ddf(i + 2c - 1) (zero outside) -- checks the neighbour and child layout."""
    size = (3, 4, 3)[:dims]
    g = torch.Generator().manual_seed(6)
    ddf = torch.randn(1, dims, *size, generator=g, dtype=torch.float64)
    ch = 2**dims
    neighbours = list(itertools.product((0, 1, 2), repeat=dims))
    mask = torch.zeros(1, 3**dims * ch, *size, dtype=torch.float64)
    for c, bits in enumerate(itertools.product((0, 1), repeat=dims)):
        nb = neighbours.index(tuple(2 * b for b in bits))
        mask[:, nb * ch + c] = 1e4
    out = ConvexUpsample(dims)(ddf, mask)
    padded = F.pad(2.0 * ddf, [1, 1] * dims)
    for fine in itertools.product(*[range(2 * s) for s in size]):
        i = [f // 2 for f in fine]
        bits = [f % 2 for f in fine]
        src = tuple(i[k] + 2 * bits[k] for k in range(dims))  # padded index of i + 2 c - 1
        assert torch.equal(out[(0, slice(None)) + fine], padded[(0, slice(None)) + src])


def test_convex_upsample_bad_mask():
    up = ConvexUpsample(2)
    ddf = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match=re.escape(str(torch.Size([1, 35, 4, 4])))):
        up(ddf, torch.zeros(1, 35, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        up(ddf, torch.zeros(1, 36, 4, 5))
    with pytest.raises(ValueError):
        ConvexUpsample(1)
    assert convex_mask_channels(2) == 36 and convex_mask_channels(3) == 216


@pytest.mark.parametrize("dims", [2, 3])
def test_linear_upsample2_constant(dims):
    size = (3, 5, 4)[:dims]
    c = torch.tensor([0.5, -2.0, 1.25][:dims]).view(1, dims, *[1] * dims)
    up = linear_upsample2(c.expand(2, dims, *size))
    assert up.shape == (2, dims, *[2 * s for s in size])
    assert torch.allclose(up, (2 * c).expand_as(up), atol=1e-6)


# --------------------------------------------------------------------------- ConvGRU


def _force_gate(gru: ConvGRU, bias: float) -> None:
    with torch.no_grad():
        gru.convz.weight.zero_()
        gru.convz.bias.fill_(bias)


@pytest.mark.parametrize("dims", [2, 3])
def test_convgru_gates(dims):
    size = (5, 6, 4)[:dims]
    gru = ConvGRU(dims, hidden_channels=3, input_channels=4)
    h = torch.randn(2, 3, *size)
    x = torch.randn(2, 4, *size)
    assert gru(h, x).shape == h.shape
    _force_gate(gru, -1e4)  # z = 0: keep the hidden state
    assert torch.equal(gru(h, x), h)
    _force_gate(gru, 1e4)  # z = 1: h' = q = tanh(conv_q([r * h, x]))
    out = gru(h, x)
    r = torch.sigmoid(gru.convr(torch.cat([h, x], 1)))
    q = torch.tanh(gru.convq(torch.cat([r * h, x], 1)))
    assert torch.allclose(out, q, atol=1e-6)
    assert float(out.abs().max()) <= 1.0
    assert not torch.allclose(out, h)


# --------------------------------------------------------------------------- SearchMorph network


def test_searchmorph_shapes_and_near_zero_init():
    net2 = SearchMorph(2).eval()
    x2 = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        y2 = net2(x2)
    assert y2.shape == (2, 2, 64, 64)
    assert float(y2.abs().max()) < 1e-2
    net3 = SearchMorph(3, radius=2, num_levels=3, iterations=2, **_TINY).eval()
    x3 = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        y3 = net3(x3)
    assert y3.shape == (1, 3, 32, 32, 32)
    assert float(y3.abs().max()) < 1e-2


def test_searchmorph_return_all_order():
    torch.manual_seed(0)
    net = SearchMorph(2, iterations=3, flow_init_std=0.1).eval()
    x = torch.randn(1, 2, 32, 40)
    with torch.no_grad():
        fields = net(x, return_all=True)
        last = net(x)
        net.return_all = True
        attr = net(x)
        net.return_all = False
    assert isinstance(fields, list) and len(fields) == 3
    assert all(f.shape == (1, 2, 32, 40) for f in fields)
    assert torch.equal(fields[0], last)
    assert all(torch.equal(a, b) for a, b in zip(fields, attr))
    assert not torch.allclose(fields[0], fields[-1])
    # the last list entry is the first iteration: a 1-iteration net with the same weights
    one = SearchMorph(2, iterations=1, flow_init_std=0.1).eval()
    one.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(one(x), fields[-1], atol=1e-6)


@pytest.mark.parametrize(
    "switch",
    [
        dict(use_context=False),
        dict(use_search=False),
        dict(num_levels=1),
        dict(iterations=1),
        dict(upsample="linear"),
        dict(correlation="all_pairs"),
    ],
)
def test_searchmorph_ablations_run(switch):
    net = SearchMorph(2, **{"iterations": 2, **switch}).eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 2, 32, 32)
    assert bool(torch.isfinite(y).all())


def test_searchmorph_ablation_structure():
    assert SearchMorph(2, use_search=False).iterations == 1
    assert SearchMorph(2, num_levels=1).search.out_channels == 25
    assert SearchMorph(2, radius=2, num_levels=4).search.out_channels == 52
    assert not SearchMorph(2, upsample="linear").convex
    assert SearchMorph(2, use_context=False).encoder.context_channels == 0
    for bad in (dict(upsample="cubic"), dict(correlation="dense"), dict(iterations=0), dict(spatial_dims=1), dict(context_channels=7)):
        with pytest.raises(ValueError):
            SearchMorph(**{"spatial_dims": 2, **bad})


def test_searchmorph_local_equals_all_pairs_same_weights():
    torch.manual_seed(1)
    local = SearchMorph(2, flow_init_std=0.1).eval()
    pairs = SearchMorph(2, correlation="all_pairs", flow_init_std=0.1).eval()
    pairs.load_state_dict(local.state_dict())
    x = torch.randn(1, 2, 48, 40)
    with torch.no_grad():
        a, b = local(x), pairs(x)
    assert float(a.abs().max()) > 1e-3
    assert float((a - b).abs().max()) < 1e-5


def test_searchmorph_gradients_reach_encoder_and_update():
    torch.manual_seed(2)
    net = SearchMorph(2, iterations=2).train()
    x = torch.randn(2, 2, 32, 32)
    ddf = net(x)
    warped = Warp()(x[:, :1], ddf)
    loss = F.mse_loss(warped, x[:, 1:])
    loss.backward()
    named = dict(net.named_parameters())
    for name in ("encoder.enc0.conv.weight", "encoder.feature_head.weight", "encoder.context_head.weight",
                 "update.gru.convz.weight", "update.flow_head.2.weight", "update.mask_head.2.weight"):
        grad = named[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), name
        assert float(grad.abs().max()) > 0, name


def test_searchmorph_torchscript_same_output():
    net = SearchMorph(2, flow_init_std=0.1).eval()
    x = torch.randn(1, 2, 32, 48)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)
        all_s = scripted(x, return_all=True)
    assert len(all_s) == 4


def test_searchmorph_input_validation():
    net = SearchMorph(2).eval()
    cases = [
        ((1, 3, 64, 64), torch.Size([1, 3, 64, 64])),  # wrong channels
        ((1, 2, 60, 64), torch.Size([60, 64])),  # not divisible by 8
        ((1, 2, 64, 64, 64), torch.Size([1, 2, 64, 64, 64])),  # wrong ndim
        ((2, 64, 64), torch.Size([2, 64, 64])),
    ]
    for shape, named in cases:
        with pytest.raises(ValueError, match=re.escape(str(named))):
            net(torch.zeros(shape))
