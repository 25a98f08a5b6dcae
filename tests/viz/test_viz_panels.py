"""Multi-panel figures and their PNG writers (morphzoo.viz.panels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.patches import Ellipse
from PIL import Image

from morphzoo.viz import (
    boxplot_by_method,
    boxplot_figure,
    chain_training_logs,
    metric_comparison_figure,
    overlay_figure,
    overlay_mask,
    plot_metric_comparison,
    plot_training_curves,
    registration_figure,
    registration_panel,
    training_curves_figure,
)
from morphzoo.viz.jacobian import FOLDING_GID, _jacobian_nd

PANELS = ["moving", "fixed", "warped", "difference", "grid", "jacobian"]


def _png_size(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def _blob(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2).astype(np.float32)


def _axes(fig) -> dict:
    return {a.get_label(): a for a in fig.axes}


def test_registration_panel_2d_writes_one_row_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fixed = _blob((32, 40), (16, 20), 8) + 0.1 * rng.random((32, 40))
    moving = _blob((32, 40), (14, 22), 7)
    ddf = np.zeros((2, 32, 40), dtype=np.float32)
    ddf[:, 10:20, 10:20] = rng.normal(scale=2.0, size=(2, 10, 10))  # some folding
    out = registration_panel(
        moving, fixed, moving, ddf, tmp_path / "reg" / "pair.png", title="pair 1",
        moving_label=moving > 0, fixed_label=fixed > 0.5, warped_label=moving,
    )
    w, h = _png_size(out)
    assert w > 4 * h  # one row of six panels

    fig = registration_figure(moving, fixed, moving, ddf, moving_label=moving, fixed_label=fixed > 0.5,
                              warped_label=moving)
    assert [a.get_label() for a in fig.axes] == PANELS
    axes = _axes(fig)
    assert [a.get_label() for a in axes["difference"].child_axes] == ["<colorbar>"]
    assert len(axes["moving"].collections) == 1  # moving label contour
    assert len(axes["warped"].collections) == 2  # fixed (dashed) + warped label contours
    assert len(axes["grid"].lines) == len(range(0, 32, 2)) + len(range(0, 40, 2))  # step = 40 // 16
    (overlay,) = [i for i in axes["jacobian"].images if i.get_gid() == FOLDING_GID]
    np.testing.assert_array_equal(np.asarray(overlay.get_array())[..., 3] > 0, _jacobian_nd(ddf) <= 0)
    assert "folding" in axes["jacobian"].get_title()


def test_registration_panel_3d_batched_tensors_and_slicing(tmp_path: Path) -> None:
    shape = (12, 16, 20)
    img = torch.from_numpy(_blob(shape, (6, 8, 10), 4))[None, None]  # (B, 1, *S)
    ddf = torch.zeros(1, 3, *shape)
    ddf[:, 0] = 2.0  # displacement along array axis 0 only
    labels = torch.nn.functional.one_hot(img[0, 0].long(), 2).permute(3, 0, 1, 2)  # one-hot (2, *S)
    out = registration_panel(img, img[0], img[0, 0], ddf, tmp_path / "reg3d.png", fixed_label=labels,
                             axis=2, index=5)
    assert _png_size(out)[0] > 0

    # slicing along axis 2: in-plane components are (0, 1); rows shift by 2
    fig = registration_figure(img, img, img, ddf, title="3d", axis=2, index=5, grid_step=4)
    assert [a.get_label() for a in fig.axes] == PANELS
    assert "axis 2, slice 5/20" in fig.get_suptitle() and fig.get_suptitle().startswith("3d")
    axes = _axes(fig)
    assert axes["moving"].images[0].get_array().shape == (12, 16)
    row_lines = [ln for ln in axes["grid"].lines if ln.get_gid() == "grid_row"]
    np.testing.assert_allclose([ln.get_ydata()[0] for ln in row_lines], np.arange(0, 12, 4) + 2.0)

    # slicing along axis 0 (default, middle slice): in-plane components (1, 2) are zero
    fig = registration_figure(img, img, img, ddf, grid_step=4)
    assert "axis 0, slice 6/12" in fig.get_suptitle()
    row_lines = [ln for ln in _axes(fig)["grid"].lines if ln.get_gid() == "grid_row"]
    np.testing.assert_allclose([ln.get_ydata()[0] for ln in row_lines], np.arange(0, 16, 4))


def test_registration_panel_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        registration_figure(np.zeros((8, 8)), np.zeros((8, 9)), np.zeros((8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError):
        registration_figure(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((4, 8, 8)))


def test_overlay_mask_2d_with_ellipse(tmp_path: Path) -> None:
    image = np.random.default_rng(1).random((40, 60))
    mask = _blob((40, 60), (20, 30), 10)
    ellipse = (30.0, 20.0, 12.0, 9.0, math.pi / 6)
    out = overlay_mask(torch.tensor(image)[None], mask, tmp_path / "ov.png", contour_color="y", extra=ellipse)
    w, h = _png_size(out)
    assert w > h

    fig = overlay_figure(image, mask, extra=ellipse)
    (ax,) = fig.axes
    assert len(ax.collections) == 1  # mask contour
    (patch,) = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert patch.center == (30.0, 20.0) and (patch.width, patch.height) == (24.0, 18.0)
    assert patch.angle == pytest.approx(30.0)


def test_overlay_mask_3d_middle_slice(tmp_path: Path) -> None:
    vol = _blob((10, 12, 14), (5, 6, 7), 4)
    out = overlay_mask(vol[None], vol, tmp_path / "ov3d.png", axis=1)
    assert _png_size(out)[0] > 0
    fig = overlay_figure(vol, vol, axis=1)
    assert fig.axes[0].images[0].get_array().shape == (10, 14)
    assert "axis 1, slice 6/12" in fig.axes[0].get_title()


def test_training_curves_from_json_lines(tmp_path: Path) -> None:
    rows = [{"epoch": i // 5 + 1, "iteration": i + 1, "loss": 1.0 / (i + 1), "lr": 1e-4, "time_s": 0.1 * i}
            for i in range(20)]
    rows += [{"epoch": e, "val_dice": 0.5 + 0.1 * e} for e in (1, 2, 3, 4)]
    src = tmp_path / "metrics.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    out = plot_training_curves(src, tmp_path / "curves.png")
    assert _png_size(out)[0] > 0

    fig = training_curves_figure(src)
    assert [a.get_label() for a in fig.axes] == ["loss", "lr", "val_dice"]
    axes = _axes(fig)
    (loss,) = axes["loss"].lines
    np.testing.assert_array_equal(loss.get_xdata(), np.arange(1, 21))
    assert axes["loss"].get_xlabel() == "iteration"
    (dice,) = axes["val_dice"].lines
    np.testing.assert_array_equal(dice.get_xdata(), [1, 2, 3, 4])
    assert axes["val_dice"].get_xlabel() == "epoch"

    fig = training_curves_figure(rows, keys=["val_dice", "time_s"])  # clock keys only on request
    assert [a.get_label() for a in fig.axes] == ["val_dice", "time_s"]
    with pytest.raises(ValueError):
        training_curves_figure(rows, keys=["nope"])


def test_training_curves_from_csv(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text("epoch,loss,val_dice\n1,0.9,\n2,0.5,0.7\n3,0.4,0.8\n", encoding="utf-8")
    fig = training_curves_figure(src)
    axes = _axes(fig)
    assert list(axes) == ["loss", "val_dice"]
    np.testing.assert_array_equal(axes["val_dice"].lines[0].get_xdata(), [2, 3])
    assert _png_size(plot_training_curves(src, tmp_path / "c.png", keys=["loss"]))[0] > 0


def test_boxplot_by_method(tmp_path: Path) -> None:
    values = {"affine": [0.5, 0.6, 0.55, float("nan")], "vxm": np.array([0.8, 0.82, 0.79]), "ours": torch.tensor([0.85])}
    out = boxplot_by_method(values, tmp_path / "box.png", ylabel="Dice")
    assert _png_size(out)[0] > 0
    fig = boxplot_figure(values)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Dice"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["affine\n(n=3)", "vxm\n(n=3)", "ours\n(n=1)"]


def test_chained_stage_logs_and_their_comparison(tmp_path: Path) -> None:
    stage1 = [{"epoch": 1, "iteration": 10, "loss": 0.5}, {"epoch": 1, "iteration": 20, "val_mean_dice": 0.80}]
    stage2 = [{"epoch": 1, "iteration": 15, "val_mean_dice": 0.85}, {"epoch": 2, "iteration": 30, "val_mean_dice": 0.86}]
    src2 = tmp_path / "stage2.jsonl"
    src2.write_text("\n".join(json.dumps(r) for r in stage2) + "\n", encoding="utf-8")
    chained = chain_training_logs([stage1, src2])
    assert [r["iteration"] for r in chained] == [10, 20, 35, 50]  # stage 2 continues after stage 1's 20 iterations
    assert [r["stage"] for r in chained] == [1, 1, 2, 2]
    single = [{"iteration": it, "val_mean_dice": d} for it, d in ((20, 0.7), (50, 0.75))]
    fig = metric_comparison_figure({"cascade": chained, "single": single})
    (ax,) = fig.axes
    lines = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
    np.testing.assert_array_equal(lines["cascade"].get_xdata(), [20, 35, 50])
    np.testing.assert_array_equal(lines["cascade"].get_ydata(), [0.80, 0.85, 0.86])
    boundaries = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert len(boundaries) == 1 and boundaries[0].get_xdata()[0] == pytest.approx(27.5)
    assert _png_size(plot_metric_comparison({"single": single}, tmp_path / "cmp.png"))[0] > 0
    # a run resumed from a checkpoint continues the count itself: not offset again; a new stage after it is
    resumed = [{"iteration": 30, "val_mean_dice": 0.81}, {"iteration": 40, "val_mean_dice": 0.82}]
    restarted = [{"iteration": 5, "val_mean_dice": 0.9}]
    assert [r["iteration"] for r in chain_training_logs([stage1, resumed, restarted])] == [10, 20, 30, 40, 45]
    assert [r["iteration"] for r in chain_training_logs([stage1, stage2, [{"iteration": 40}]])] == [10, 20, 35, 50, 60]
    with pytest.raises(ValueError, match="iteration"):
        chain_training_logs([[{"epoch": 1, "loss": 0.3}]])
    with pytest.raises(ValueError, match="val_mean_dice"):
        metric_comparison_figure({"empty": [{"iteration": 1, "loss": 0.2}]})
