"""Engines: glue between MorphZoo registration losses/networks and MONAI's ignite engines."""

from morphzoo.engines.checkpoint import ResumableCheckpoint
from morphzoo.engines.freeze import FreezeParameters
from morphzoo.engines.logs import TrainingLog
from morphzoo.engines.registration import AffineInferer, RegistrationInferer, RegistrationPrepareBatch, WarpLabelsd, one_hot_labels
