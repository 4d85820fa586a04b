"""PAD metrics in pure numpy: ROC/AUC/EER, ISO/IEC 30107-3 rates, threshold policies, fusion, CIs.

Label 1 = bona fide, score = P(bona fide), accept when ``score >= threshold``. The reported metrics are
listed once, as data, in :mod:`mfas.metrics.definitions`.
"""

from mfas.metrics.aggregate import mean_std, weighted_average
from mfas.metrics.bootstrap import bootstrap_ci, bootstrap_cis
from mfas.metrics.core import (
    EER,
    ErrorCurve,
    accuracy_at_bpcer,
    apcer_per_species,
    bpcer_at_apcer,
    eer,
    error_curve,
    roc_auc,
    tpr_at_fpr,
)
from mfas.metrics.definitions import Metric
from mfas.metrics.evaluate import confidence_intervals, evaluate_scores, rates_at, threshold_free
from mfas.metrics.fusion import FusedScores, fuse_videos
from mfas.metrics.thresholds import Threshold, ThresholdPolicy, choose_threshold

__all__ = [
    "EER",
    "ErrorCurve",
    "FusedScores",
    "Metric",
    "Threshold",
    "ThresholdPolicy",
    "accuracy_at_bpcer",
    "apcer_per_species",
    "bootstrap_ci",
    "bootstrap_cis",
    "bpcer_at_apcer",
    "choose_threshold",
    "confidence_intervals",
    "eer",
    "error_curve",
    "evaluate_scores",
    "fuse_videos",
    "mean_std",
    "rates_at",
    "roc_auc",
    "threshold_free",
    "tpr_at_fpr",
    "weighted_average",
]
