"""Transforms: validated I/O, subject loading, pair building."""

from morphzoo.transforms.io import (
    ImageRecord,
    InputError,
    atomic_output_dir,
    check_outputs_free,
    read_image,
    read_label,
    write_nifti_like,
    write_png,
)
from morphzoo.transforms.load import LoadSubjectd
from morphzoo.transforms.pairs import PairDataset, pair_indices
from morphzoo.transforms.spatial import compose_ddf, reference_to_moving_voxels, resample_to_reference, resize_field, resize_image, warp_from_reference
from morphzoo.transforms.slices import RandSlicePaird, ResizeInPlaned
from morphzoo.transforms.shape import FillEllipsed
from morphzoo.transforms.affine import affine_to_ddf, compose_affine_field, resample_affine
