"""MIND-SSC descriptors and loss (morphzoo.losses.mind): analytic properties."""

from __future__ import annotations

import pytest
import torch

from morphzoo.losses import MINDSSCLoss, make_image_loss, mind_ssc
from morphzoo.losses.mind import ssc_pairs


def test_pair_counts_and_shapes() -> None:
    assert len(ssc_pairs(3)) == 12 and len(ssc_pairs(2)) == 4
    g = torch.Generator().manual_seed(0)
    assert mind_ssc(torch.rand(2, 1, 10, 12, 14, generator=g)).shape == (2, 12, 10, 12, 14)
    assert mind_ssc(torch.rand(1, 1, 20, 30, generator=g)).shape == (1, 4, 20, 30)


@pytest.mark.parametrize("size", [(24, 28), (12, 14, 16)])
def test_descriptor_is_invariant_to_linear_intensity_changes(size) -> None:
    """exp(-D / V): patch distances and their mean both scale by a^2 and ignore b."""
    x = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(mind_ssc(3.0 * x + 7.0), mind_ssc(x), atol=1e-6, rtol=0)
    m = mind_ssc(x)
    assert m.min() > 0 and m.amax(dim=1).sub(1).abs().max() < 1e-9  # in (0, 1], max channel 1


def test_loss_is_zero_for_identical_images_and_grows_with_a_shift() -> None:
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    loss = make_image_loss("mind", 3)
    assert isinstance(loss, MINDSSCLoss)
    assert loss(x, x).item() == 0.0
    assert loss(x, 2 * x + 1).item() < 1e-10
    assert loss(torch.roll(x, 2, dims=2), x).item() > 0.01
