"""Inference: the registration pipeline (``Registrar`` and its stages), the command-line runners,
evaluation over datalists and its reports, segmentation."""

from morphzoo.inference.evaluate import evaluate_pairs, identity_registrar, load_pair_item
from morphzoo.inference.instance import InstanceOptimization
from morphzoo.inference.prealign import PREALIGN_MODES, NetAffine, OptimAffine, make_prealign
from morphzoo.inference.refine import FieldRefiner
from morphzoo.inference.registrar import OUTPUT_NAMES, Registrar, RegistrationResult, load_weights, minmax_normalize
from morphzoo.inference.reports import SUMMARY_METRICS, summarize, summary_markdown
from morphzoo.inference.runner import RegistrationRunner, cli_errors, cli_flag, datalist_pairs
from morphzoo.inference.flips import FlipInferer
from morphzoo.inference.slices import SliceWiseInferer
from morphzoo.inference.segment import (
    SEGMENTATION_METRICS,
    SegmentationRunner,
    Segmenter,
    calibrate_hc_offset,
    evaluate_segmentation,
    segmentation_metrics,
)
