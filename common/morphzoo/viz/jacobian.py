"""Jacobian-determinant maps of displacement fields."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize, TwoSlopeNorm, to_rgba
from matplotlib.image import AxesImage

from ._arrays import field_item, to_numpy

FOLDING_GID = "jacobian_folding"


def _jacobian_2d(ddf2d: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + u(x)`` for a 2D field (central differences).

    Args:
        ddf2d: ``(2, H, W)`` displacement in pixels (channel i along array axis i),
            ``H, W >= 2``.

    Returns:
        ``(H, W)`` determinant; one-sided differences at the border (``numpy.gradient``).
    """
    u = np.asarray(ddf2d, dtype=np.float64)
    d00, d01 = np.gradient(u[0])
    d10, d11 = np.gradient(u[1])
    return (1.0 + d00) * (1.0 + d11) - d01 * d10


def _jacobian_nd(field: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of ``x -> x + u(x)`` for an N-D field (central differences).

    Args:
        field: ``(N, *S)`` displacement in voxels, ``N == len(S)``, every size >= 2.

    Returns:
        ``(*S)`` determinant.
    """
    u = np.asarray(field, dtype=np.float64)
    n = u.shape[0]
    if n == 2:
        return _jacobian_2d(u)
    grads = np.stack([np.stack(np.gradient(u[i]), axis=-1) for i in range(n)], axis=-2)
    grads += np.eye(n)
    return np.linalg.det(grads)


def jacobian_determinant_field(ddf: Any) -> np.ndarray:
    """Jacobian determinant of one displacement field, over the whole field.

    Uses :func:`morphzoo.metrics.jacobian.jacobian_determinant` when it is importable (lazy
    import), otherwise the identical local scheme (:func:`numpy.gradient`: central differences
    inside, one-sided on the outer layer). For 3D fields this is the full 3D determinant;
    plots show a slice of it rather than the determinant of the in-plane components.

    Args:
        ddf: ``(N, *S)`` or ``(B, N, *S)`` (item 0), voxels, tensor or array.

    Returns:
        ``(*S)`` float array.
    """
    field = field_item(ddf)
    spatial = field.shape[1:]
    import torch

    from morphzoo.metrics.jacobian import jacobian_determinant  # the project's one definition

    try:
        out = to_numpy(jacobian_determinant(torch.from_numpy(np.ascontiguousarray(field[None]))))[0]
        if out.shape == spatial:
            return out.astype(np.float64, copy=False)
    except ValueError:  # shapes the metric rejects (a spatial size below 2): the array version below copes
        pass
    return _jacobian_nd(field)


def add_colorbar(ax: Axes, mappable: ScalarMappable, label: str | None = None, **kwargs: Any) -> Colorbar:
    """Attach a slim colorbar just right of ``ax``, as tall as the drawn axes box.

    The colorbar lives in an inset axes of ``ax`` (in ``ax.child_axes``, not in
    ``fig.axes``; label ``"<colorbar>"`` like matplotlib's own colorbar axes), so it follows
    an equal-aspect image instead of the whole grid cell.

    Args:
        ax: the axes the colorbar belongs to.
        mappable: image or other scalar mappable.
        label: colorbar label.
        **kwargs: passed to :meth:`~matplotlib.figure.Figure.colorbar` (e.g. ``extend``).

    Returns:
        The colorbar.
    """
    cax = ax.inset_axes([1.03, 0.0, 0.05, 1.0])
    cax.set_label("<colorbar>")
    return ax.get_figure().colorbar(mappable, cax=cax, label=label, **kwargs)


def plot_jacobian_map(
    ax: Axes,
    jac2d: Any,
    vmin: float = 0.0,
    vmax: float = 2.0,
    *,
    cmap: str = "RdBu_r",
    fold_color: Any = "k",
    colorbar: bool = False,
    colorbar_label: str | None = "det J",
) -> AxesImage:
    """Show a Jacobian-determinant map with a diverging colormap centred at 1.

    Values above 1 (expansion) go to red, below 1 (compression) to blue, 1 is white. Folded
    pixels (``det J <= 0``) are painted over in ``fold_color`` by a second image with
    ``gid="jacobian_folding"``: an RGBA array ``(H, W, 4)`` whose alpha is 1 exactly on the
    folded pixels.

    Args:
        ax: target axes.
        jac2d: ``(H, W)`` determinant map, tensor or array.
        vmin: colour-scale minimum.
        vmax: colour-scale maximum (values outside are clipped to the end colours).
        cmap: diverging colormap name.
        fold_color: colour of folded pixels.
        colorbar: also draw a colorbar (see :func:`add_colorbar`).
        colorbar_label: its label.

    Returns:
        The determinant image (use it for a colorbar); the folding overlay is
        ``[im for im in ax.images if im.get_gid() == "jacobian_folding"][0]``.
    """
    jac = to_numpy(jac2d).astype(np.float64, copy=False)
    if jac.ndim != 2:
        raise ValueError(f"jac2d must be 2D (H, W), got shape {tuple(jac.shape)}")
    norm: Normalize
    if vmin < 1.0 < vmax:
        norm = TwoSlopeNorm(vcenter=1.0, vmin=vmin, vmax=vmax)
    else:
        norm = Normalize(vmin=vmin, vmax=vmax)
    im = ax.imshow(jac, cmap=cmap, norm=norm, interpolation="nearest")
    folded = jac <= 0
    overlay = np.zeros(jac.shape + (4,), dtype=np.float64)
    overlay[folded] = to_rgba(fold_color)
    overlay[..., 3] = folded.astype(np.float64)
    ax.imshow(overlay, interpolation="nearest", gid=FOLDING_GID)
    if colorbar:
        add_colorbar(ax, im, label=colorbar_label, extend="both")
    return im
