"""Slice transforms (morphzoo.transforms.slices): few-label slice pairs and the in-plane resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from morphzoo.transforms.slices import RandSlicePaird, ResizeInPlaned


def _volume(n: int = 20) -> dict:
    """Slice k of the image is filled with k; the label marks only slice 10 with 1 and every other slice with 2."""
    img = torch.arange(n, dtype=torch.float32).reshape(1, n, 1, 1).expand(1, n, 6, 5).clone()
    lab = torch.full((1, n, 6, 5), 2.0)
    lab[:, min(10, n - 1)] = 1.0
    return {"image": img, "label": lab}


def test_pairs_the_labelled_slice_with_one_within_radius_and_never_reads_other_labels():
    t = RandSlicePaird(slice_index=10, radius=3)
    t.set_random_state(0)
    offsets = set()
    for _ in range(200):
        out = t(_volume())
        assert out["moving"].shape == out["fixed"].shape == out["moving_label"].shape == (1, 6, 5)
        assert torch.all(out["moving"] == 10) and torch.all(out["moving_label"] == 1)
        d = int(out["offset"])
        assert torch.all(out["fixed"] == 10 + d)
        assert "image" not in out and "label" not in out  # the volumes (and their unlabelled slices' labels) are dropped
        offsets.add(d)
    assert offsets == {-3, -2, -1, 1, 2, 3}


def test_offsets_are_clipped_radius_zero_is_the_moving_slice_and_items_override():
    t = RandSlicePaird(slice_index=1, radius=5, drop_volumes=False)
    t.set_random_state(1)
    fixed = {int(t(_volume(8))["fixed"][0, 0, 0]) for _ in range(100)}
    assert fixed <= set(range(8)) and 0 in fixed and 6 in fixed
    same = RandSlicePaird(slice_index=4, radius=0)(_volume(8))
    assert int(same["offset"]) == 0 and torch.equal(same["moving"], same["fixed"])
    item = {**_volume(), "labelled_slice": 3, "labelled_axis": 1}
    out = RandSlicePaird(slice_index=10, radius=0)(item)
    assert out["moving"].shape == (1, 20, 5)  # sliced along the second spatial axis


def test_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="radius"):
        RandSlicePaird(radius=-1)
    with pytest.raises(ValueError, match="keys"):
        RandSlicePaird(keys=("image",))
    with pytest.raises(ValueError, match=r"\(C, D, H, W\)"):
        RandSlicePaird()({"image": torch.zeros(1, 6, 6), "label": torch.zeros(1, 6, 6)})
    with pytest.raises(ValueError, match="outside"):
        RandSlicePaird(slice_index=40)(_volume())


@pytest.mark.parametrize("shape", [(1, 50, 70), (1, 9, 50, 70)])
def test_resize_in_plane_keeps_other_axes_and_inverts(shape):
    t = ResizeInPlaned("image", (32, 16), mode="bilinear", align_corners=True)
    x = MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(0)))
    out = t({"image": x})
    assert tuple(out["image"].shape) == shape[:-2] + (32, 16)
    out["pred"] = out["image"].clone()
    back = Invertd("pred", transform=t, orig_keys="image")(out)["pred"]
    assert tuple(back.shape) == shape
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ResizeInPlaned("image", (8, 8, 8))


def test_resize_in_plane_is_identity_at_the_same_size():
    x = MetaTensor(torch.rand(1, 4, 8, 8))
    out = ResizeInPlaned("image", (8, 8), mode="bilinear", align_corners=True)({"image": x})
    np.testing.assert_allclose(np.asarray(out["image"]), np.asarray(x), atol=1e-6)


def test_extent_prior_draws_background_slices_only_beyond_its_distance():
    t = RandSlicePaird(slice_index=10, radius=2, background_beyond=4, background_prob=0.5)
    t.set_random_state(3)
    outs = [t(_volume()) for _ in range(300)]
    bg = [int(o["offset"]) for o in outs if float(o["fixed_background"]) == 1.0]
    near = [int(o["offset"]) for o in outs if float(o["fixed_background"]) == 0.0]
    assert 100 < len(bg) < 200 and min(abs(d) for d in bg) == 5 and {-10, 9} <= set(bg)
    assert set(near) == {-2, -1, 1, 2}
    assert all(torch.all(o["fixed"] == 10 + int(o["offset"])) for o in outs)
    assert all(float(o["fixed_background"]) == 0.0 for o in (RandSlicePaird(slice_index=10, radius=2)(_volume()) for _ in range(20)))
    with pytest.raises(ValueError, match="background_beyond"):
        RandSlicePaird(radius=5, background_beyond=3)
