"""warp_image (morphzoo.networks.blocks.warp): MONAI Warp's numbers, scriptable, shape errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import Warp

from morphzoo.networks.blocks import warp_image


@pytest.mark.parametrize("size", [(9, 11), (7, 8, 9)])
def test_matches_monai_warp(size):
    torch.manual_seed(0)
    image = torch.rand(2, 3, *size)
    ddf = torch.randn(2, len(size), *size) * 2.0
    expected = Warp(mode="bilinear", padding_mode="border")(image, ddf)
    torch.testing.assert_close(warp_image(image, ddf), expected)
    torch.testing.assert_close(torch.jit.script(warp_image)(image, ddf), expected)


def test_integer_shift_moves_the_image():
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    ddf = torch.zeros(1, 2, 4, 5)
    ddf[:, 1] = 1.0  # warped(x) = image(x + e_1): one column to the left
    out = warp_image(image, ddf)
    torch.testing.assert_close(out[..., :4], image[..., 1:])
    torch.testing.assert_close(out[..., 4], image[..., 4])  # border padding


def test_field_of_another_grid_is_refused():
    with pytest.raises(ValueError, match=r"field on the image's grid"):
        warp_image(torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 4, 4))
