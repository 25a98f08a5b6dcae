"""Atomic PNG writing (morphzoo.viz.io)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from morphzoo.viz import new_figure, save_figure


def _fig():
    fig = new_figure((2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_writes_png_creates_parents_and_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "fig.png"
    out = save_figure(_fig(), target)
    assert out == target and target.stat().st_size > 0
    with Image.open(target) as im:
        assert im.format == "PNG" and im.size == (200, 200)  # 2 in x 100 dpi
    save_figure(_fig(), target, dpi=50)  # overwriting is fine
    with Image.open(target) as im:
        assert im.size == (100, 100)
    assert sorted(p.name for p in target.parent.iterdir()) == ["fig.png"]  # no temporary left


def test_save_figure_writes_png_whatever_the_suffix(tmp_path: Path) -> None:
    out = save_figure(_fig(), tmp_path / "fig.out")
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_save_figure_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    fig = _fig()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    fig.savefig = boom
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_save_figure_closes_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    num = fig.number
    save_figure(fig, tmp_path / "p.png")
    assert not plt.fignum_exists(num)
