"""Data sets, splits and datalists.

- :mod:`morphzoo.data.splits`: the deterministic subject split (80/10/10, ``random.Random(0)``)
  and fixed ordered test pairs shared by every tool.
- :mod:`morphzoo.data.hippocampus`: MSD Task04 hippocampus readers (Learn2Reg 64^3 and raw MSD layouts).
- :mod:`morphzoo.data.hc18`: HC18 fetal head ultrasound readers (CSV, images, head masks).
- :mod:`morphzoo.data.labels`: unexpected-label reporting/cleaning, and the ``MapUnexpectedLabelsd`` transform.
- :mod:`morphzoo.data.datalists`: benchmark and user-folder datalists, load / resolve / save.
- :mod:`morphzoo.data.download`: download helpers (need internet; never run by the tests).
"""

from __future__ import annotations

from morphzoo.data.datalists import (
    HIPPOCAMPUS2D_SLICE,
    N_TEST_PAIRS,
    N_VALIDATION_PAIRS,
    PATH_KEYS,
    SPLIT_SEED,
    TASKS,
    atlas_pairs,
    build_datalist,
    build_folder_datalist,
    load_datalist,
    resolve_paths,
    save_datalist,
    validation_subject_pairs,
)
from morphzoo.data.download import download_datasets, download_hc18, download_msd_hippocampus
from morphzoo.data.hc18 import HC18_LABELS, hc18_subject, list_hc18, load_hc18_mask, read_hc18_csv
from morphzoo.data.hippocampus import (
    HIPPOCAMPUS_LABELS,
    HIPPOCAMPUS_SIZE,
    check_label_values,
    convert_msd_hippocampus,
    detect_hippocampus_layout,
    list_hippocampus,
    load_hippocampus,
    pad_crop_center,
    pad_crop_nifti,
    scan_hippocampus_labels,
)
from morphzoo.data.labels import MapUnexpectedLabelsd, clean_label, unexpected_label_counts
from morphzoo.data.splits import fixed_test_pairs, split_sizes, split_subjects

__all__ = [
    "TASKS",
    "SPLIT_SEED",
    "N_TEST_PAIRS",
    "N_VALIDATION_PAIRS",
    "HIPPOCAMPUS2D_SLICE",
    "PATH_KEYS",
    "build_datalist",
    "atlas_pairs",
    "build_folder_datalist",
    "load_datalist",
    "resolve_paths",
    "save_datalist",
    "validation_subject_pairs",
    "download_datasets",
    "download_hc18",
    "download_msd_hippocampus",
    "HC18_LABELS",
    "hc18_subject",
    "list_hc18",
    "load_hc18_mask",
    "read_hc18_csv",
    "HIPPOCAMPUS_LABELS",
    "HIPPOCAMPUS_SIZE",
    "check_label_values",
    "convert_msd_hippocampus",
    "detect_hippocampus_layout",
    "list_hippocampus",
    "load_hippocampus",
    "pad_crop_center",
    "pad_crop_nifti",
    "scan_hippocampus_labels",
    "MapUnexpectedLabelsd",
    "clean_label",
    "unexpected_label_counts",
    "fixed_test_pairs",
    "split_sizes",
    "split_subjects",
]
