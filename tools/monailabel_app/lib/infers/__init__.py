"""Inference tasks: a segmentation bundle served through MONAI Label's ``BundleInferTask`` and
atlas-based segmentation by registration with a registration bundle."""

from lib.infers.atlas_registration import AtlasRegistrationInfer
from lib.infers.bundle_segmentation import BundleSegmentationInfer

__all__ = ["AtlasRegistrationInfer", "BundleSegmentationInfer"]
