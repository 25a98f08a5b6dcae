"""Figure creation and atomic PNG writing.

Figures are built with :class:`matplotlib.figure.Figure` and an explicit Agg canvas, never
through ``pyplot``: no global backend state, no figure registry to leak into, safe to call
from worker threads.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEFAULT_DPI = 100


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    """Create a figure with an Agg canvas (no ``pyplot``).

    Args:
        figsize: ``(width, height)`` in inches.
        **kwargs: passed to :class:`~matplotlib.figure.Figure` (default ``layout="constrained"``).

    Returns:
        The new figure.
    """
    kwargs.setdefault("layout", "constrained")
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def close_figure(fig: Figure) -> None:
    """Release a figure: ``pyplot.close`` if pyplot manages it, else clear it.

    Args:
        fig: the figure.
    """
    manager = getattr(fig.canvas, "manager", None)
    plt = sys.modules.get("matplotlib.pyplot")
    if manager is not None and plt is not None:
        plt.close(fig)
    else:
        fig.clear()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DEFAULT_DPI, close: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically.

    The PNG is written to a hidden temporary file in the target folder and moved over
    ``path`` with :func:`os.replace`, so a reader never sees a half-written file. Parent
    folders are created; an existing file is overwritten.

    Args:
        fig: the figure.
        path: destination (written as PNG whatever its suffix).
        dpi: resolution.
        close: release the figure afterwards (see :func:`close_figure`).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if close:
            close_figure(fig)
    return path
