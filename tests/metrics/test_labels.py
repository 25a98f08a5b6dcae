from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from morphzoo.metrics import label_overlap_and_distance, segmentation_scores


def _box(shape, *ranges, value=1, dtype=np.int64):
    out = np.zeros(shape, dtype=dtype)
    out[tuple(slice(a, b) for a, b in ranges)] = value
    return out


def _disk(shape, center, radius):
    yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.int64)


def test_dice_of_rectangles_is_analytic():
    shape = (48, 40)
    pred = _box(shape, (10, 30), (10, 30))  # 20 x 20
    ref = _box(shape, (15, 35), (10, 30))  # overlap 15 x 20
    out = label_overlap_and_distance(pred, ref, labels=[1], distances=False)
    assert out == {"dice_1": pytest.approx(0.75), "dice": pytest.approx(0.75)}
    # torch input and a second label with a different overlap: 2 * 50 / (100 + 100)
    pred[0:10, 0:10] = 2
    ref[5:15, 0:10] = 2
    out = label_overlap_and_distance(torch.as_tensor(pred), torch.as_tensor(ref), labels=[1, 2], distances=False)
    assert out["dice_2"] == pytest.approx(0.5)
    assert out["dice"] == pytest.approx((0.75 + 0.5) / 2)


@pytest.mark.parametrize("axis, k", [(0, 5), (1, 3)])
def test_hd_of_shifted_rectangles_uses_anisotropic_spacing(axis, k):
    shape, spacing = (50, 50), (0.5, 2.0)
    pred = _box(shape, (10, 30), (10, 25))
    ref = np.roll(pred, k, axis=axis)
    out = label_overlap_and_distance(pred, ref, labels=[1], spacing=spacing)
    assert out["hd_1"] == pytest.approx(k * spacing[axis])
    assert out["hd"] == pytest.approx(k * spacing[axis])
    assert 0 < out["hd95_1"] <= out["hd_1"] + 1e-9
    assert 0 < out["assd_1"] < out["hd_1"]


def test_hd_of_shifted_disks():
    shape, spacing, k = (64, 64), (0.7, 1.3), 4
    pred = _disk(shape, (30, 30), 10)
    ref = _disk(shape, (30, 30 + k), 10)
    out = label_overlap_and_distance(pred, ref, labels=[1], spacing=spacing)
    assert out["hd_1"] == pytest.approx(k * 1.3)
    iso = label_overlap_and_distance(pred, ref, labels=[1])  # spacing None -> voxels
    assert iso["hd_1"] == pytest.approx(k)


def test_assd_of_parallel_segments_is_analytic():
    # one-voxel-thick segments are all surface: every voxel is exactly k * spacing[0] from the other
    shape, spacing, k = (20, 30), (1.5, 0.4), 3
    pred = _box(shape, (5, 6), (4, 24))
    ref = _box(shape, (5 + k, 6 + k), (4, 24))
    out = label_overlap_and_distance(pred, ref, labels=[1], spacing=spacing)
    for key in ("hd_1", "hd95_1", "assd_1"):
        assert out[key] == pytest.approx(k * 1.5)
    assert out["dice_1"] == 0.0


def test_3d_boxes_shifted_along_last_axis():
    shape, spacing, k = (16, 16, 20), (1.0, 1.0, 2.5), 2
    pred = _box(shape, (4, 12), (4, 12), (4, 12))
    ref = _box(shape, (4, 12), (4, 12), (4 + k, 12 + k))
    out = label_overlap_and_distance(pred, ref, labels=[1], spacing=spacing)
    assert out["hd_1"] == pytest.approx(k * 2.5)
    assert out["dice_1"] == pytest.approx(6 / 8)


def test_identical_maps():
    labels = _box((20, 20, 20), (2, 10), (3, 12), (4, 9))
    labels[12:18, 12:18, 12:18] = 2
    out = label_overlap_and_distance(labels, labels.copy(), labels=[1, 2], spacing=(2.0, 1.0, 0.5))
    for key in ("dice", "dice_1", "dice_2"):
        assert out[key] == 1.0
    for key in ("hd", "hd95", "assd", "hd_2", "assd_1"):
        assert out[key] == 0.0


def test_absent_labels_give_dice_zero_or_one_and_nan_distances():
    shape = (30, 30)
    pred = _box(shape, (5, 15), (5, 15))
    ref = pred.copy()
    ref[20:25, 20:25] = 3  # label 3 only in ref; label 4 nowhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MONAI empty-mask warnings leak out
        out = label_overlap_and_distance(pred, ref, labels=[1, 3, 4], spacing=(1.0, 1.0))
    assert out["dice_1"] == 1.0 and out["dice_3"] == 0.0 and out["dice_4"] == 1.0
    assert out["dice"] == pytest.approx(2 / 3)
    for name in ("hd", "hd95", "assd"):
        assert out[f"{name}_1"] == 0.0
        assert math.isnan(out[f"{name}_3"]) and math.isnan(out[f"{name}_4"])
        assert out[name] == 0.0  # mean over labels with a defined distance
    only_missing = label_overlap_and_distance(pred, ref, labels=[3])
    assert math.isnan(only_missing["hd"]) and only_missing["dice"] == 0.0


def test_float_and_uint16_label_maps():
    pred = _box((20, 20), (2, 12), (2, 12)).astype(np.uint16)
    ref = _box((20, 20), (2, 12), (2, 12)).astype(np.float64)
    assert label_overlap_and_distance(pred, ref, labels=[1], distances=False)["dice"] == 1.0


def test_label_shape_errors():
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(10, 11\)"):
        label_overlap_and_distance(np.zeros((10, 10)), np.zeros((10, 11)), labels=[1])
    with pytest.raises(ValueError, match=r"\(10,\)"):
        label_overlap_and_distance(np.zeros(10), np.zeros(10), labels=[1])
    with pytest.raises(ValueError, match="spacing"):
        label_overlap_and_distance(np.zeros((10, 10)), np.zeros((10, 10)), labels=[1], spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="labels"):
        label_overlap_and_distance(np.zeros((10, 10)), np.zeros((10, 10)), labels=[])
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 8, 1\)"):
        segmentation_scores(np.zeros((8, 8)), np.zeros((8, 8, 1)))


def test_segmentation_scores_analytic():
    shape = (40, 40)
    p_region = _box(shape, (10, 30), (10, 20)).astype(bool)  # 200 voxels
    r_region = _box(shape, (10, 30), (15, 25)).astype(bool)  # 200 voxels, overlap 100
    prob = np.where(p_region, 0.8, 0.1)
    out = segmentation_scores(prob, r_region.astype(np.uint8), spacing=(0.5, 0.5))
    tp, fp, fn = 100, 100, 100
    assert out["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert out["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert out["precision"] == pytest.approx(tp / (tp + fp))
    assert out["recall"] == pytest.approx(tp / (tp + fn))
    sq = tp * 0.2**2 + fp * 0.8**2 + fn * 0.9**2 + (1600 - 300) * 0.1**2
    assert out["rmse"] == pytest.approx(math.sqrt(sq / 1600))
    assert out["hd95"] > 0 and 0 < out["assd"] <= 5 * 0.5
    assert set(out) == {"dice", "iou", "precision", "recall", "rmse", "hd95", "assd"}


def test_segmentation_scores_threshold_and_identical_mask():
    ref = _box((24, 24), (4, 20), (6, 18))
    prob = torch.as_tensor(np.where(ref > 0, 0.5, 0.49))  # 0.5 counts as foreground
    out = segmentation_scores(prob, ref)
    assert out["dice"] == 1.0 and out["iou"] == 1.0 and out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["hd95"] == 0.0 and out["assd"] == 0.0
    assert out["rmse"] == pytest.approx(math.sqrt((ref.sum() * 0.25 + (ref.size - ref.sum()) * 0.49**2) / ref.size))
    assert segmentation_scores(prob, ref, threshold=0.6)["dice"] == 0.0


def test_segmentation_scores_with_a_separate_mask():
    ref = _box((24, 24), (4, 20), (6, 18))
    prob = np.where(ref > 0, 0.3, 0.1)  # thresholded at 0.5: nothing
    out = segmentation_scores(prob, ref, mask=ref)  # the mask decides overlap and distances
    assert out["dice"] == 1.0 and out["hd95"] == 0.0
    assert out["rmse"] == pytest.approx(segmentation_scores(prob, ref)["rmse"])  # the probabilities decide rmse
    assert segmentation_scores(prob, ref)["dice"] == 0.0
    with pytest.raises(ValueError, match="mask of shape"):
        segmentation_scores(prob, ref, mask=ref[:-1])


def test_segmentation_scores_empty_prediction_does_not_crash():
    ref = _box((16, 16), (4, 8), (4, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = segmentation_scores(np.zeros((16, 16)), ref)
    assert out["dice"] == 0.0 and out["iou"] == 0.0 and out["recall"] == 0.0
    assert math.isnan(out["precision"]) and math.isnan(out["hd95"]) and math.isnan(out["assd"])
    both_empty = segmentation_scores(np.zeros((16, 16)), np.zeros((16, 16)))
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0 and both_empty["rmse"] == 0.0
