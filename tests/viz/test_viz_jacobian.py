"""Jacobian-determinant maps (morphzoo.viz.jacobian)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from morphzoo.viz import jacobian_determinant_field, new_figure, plot_jacobian_map
from morphzoo.viz.jacobian import FOLDING_GID, _jacobian_2d, _jacobian_nd


def _linear_field(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """ddf(x) = A x on a grid of ``shape``: (N, *shape)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", a, grid)


def test_jacobian_2d_linear_field_exact_everywhere() -> None:
    a = np.array([[0.2, -0.3], [0.5, -1.4]])
    jac = _jacobian_2d(_linear_field(a, (7, 9)))
    np.testing.assert_allclose(jac, np.linalg.det(np.eye(2) + a))
    assert np.all(jac < 0)  # -1.4 on the diagonal folds
    np.testing.assert_allclose(_jacobian_2d(np.zeros((2, 5, 5))), 1.0)


def test_jacobian_nd_3d_linear_field() -> None:
    a = np.array([[0.1, 0.2, 0.0], [-0.3, 0.4, 0.1], [0.0, 0.2, -0.2]])
    np.testing.assert_allclose(_jacobian_nd(_linear_field(a, (5, 6, 4))), np.linalg.det(np.eye(3) + a))


def test_determinant_field_accepts_batches_and_is_the_metrics_definition(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    ddf = rng.normal(size=(1, 3, 6, 7, 5))
    ref = _jacobian_nd(ddf[0])
    np.testing.assert_allclose(jacobian_determinant_field(torch.tensor(ddf)), ref, atol=1e-10)
    np.testing.assert_allclose(jacobian_determinant_field(ddf), ref, atol=1e-10)
    monkeypatch.setitem(sys.modules, "morphzoo.metrics.jacobian", None)  # a broken import is not hidden
    with pytest.raises(ImportError):
        jacobian_determinant_field(ddf)


def test_map_flags_folded_region_and_centres_colormap_at_one() -> None:
    jac = np.ones((16, 20))
    jac[4:8, 5:9] = -0.5  # folded block
    jac[10, 12] = 0.0  # det exactly 0 counts as folding
    jac[12:14, 2:4] = 1.8
    fig = new_figure((3, 3))
    ax = fig.add_subplot()
    im = plot_jacobian_map(ax, torch.tensor(jac))
    assert im.norm.vmin == 0 and im.norm.vmax == 2 and im.norm(1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(im.get_array(), jac)
    (overlay,) = [i for i in ax.images if i.get_gid() == FOLDING_GID]
    rgba = np.asarray(overlay.get_array())
    assert rgba.shape == (16, 20, 4)
    np.testing.assert_array_equal(rgba[..., 3] > 0, jac <= 0)
    np.testing.assert_array_equal(rgba[jac <= 0, :3], 0.0)  # black
    assert len(fig.axes) == 1


def test_map_flags_folding_of_a_real_field_and_adds_colorbar() -> None:
    ddf = np.zeros((2, 24, 24))
    ddf[0, 8:16, :] = -1.5 * (np.arange(8)[:, None] - 3.5)  # rows 8..15 pulled back beyond each other
    jac = _jacobian_2d(ddf)
    assert (jac <= 0).any()
    fig = new_figure((3, 3))
    ax = fig.add_subplot()
    plot_jacobian_map(ax, jac, colorbar=True)
    (overlay,) = [i for i in ax.images if i.get_gid() == FOLDING_GID]
    np.testing.assert_array_equal(np.asarray(overlay.get_array())[..., 3] > 0, jac <= 0)
    assert len(fig.axes) == 1  # the colorbar is an inset (child) axes of the map
    assert [a.get_label() for a in ax.child_axes] == ["<colorbar>"]


def test_map_rejects_3d() -> None:
    with pytest.raises(ValueError):
        plot_jacobian_map(new_figure((2, 2)).add_subplot(), np.ones((2, 3, 3)))
