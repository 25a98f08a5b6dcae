"""Inference: the ``register`` API, evaluation over datalists, writers that keep image headers."""

from morphzoo.inference.evaluate import (
    SUMMARY_METRICS,
    RegistrationRunner,
    evaluate_pairs,
    identity_registrar,
    load_pair_item,
    summarize,
    summary_markdown,
)
from morphzoo.inference.instance import InstanceOptimization
from morphzoo.inference.registrar import OUTPUT_NAMES, Registrar, RegistrationResult, load_weights, minmax_normalize
from morphzoo.inference.segment import SEGMENTATION_METRICS, SegmentationRunner, Segmenter, evaluate_segmentation
