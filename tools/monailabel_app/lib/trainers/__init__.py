"""Training tasks: a segmentation bundle trained through MONAI Label's ``BundleTrainTask``, writing
into the app's model folder."""

from lib.trainers.bundle_train import AppBundleTrainTask

__all__ = ["AppBundleTrainTask"]
