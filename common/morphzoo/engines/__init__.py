"""Engines: glue between MorphZoo registration losses/networks and MONAI's ignite engines."""

from morphzoo.engines.allocator import keep_heap
from morphzoo.engines.checkpoint import ResumableCheckpoint, save_state_atomic
from morphzoo.engines.distributed import finish_process_group, init_process_group
from morphzoo.engines.freeze import FreezeParameters
from morphzoo.engines.logs import TrainingLog
from morphzoo.engines.precision import bf16_supported, resolve_autocast
from morphzoo.engines.timing import STEP_STAGES, StepTimer
from morphzoo.engines.joint import JointRegSegLoss, JointRegSegTrainer
from morphzoo.engines.registration import AffineInferer, RegistrationInferer, RegistrationPrepareBatch, WarpLabelsd, one_hot_labels
