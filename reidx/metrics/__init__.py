"""Metrics: ranking metrics (CMC/mAP, multi- and single-shot), recovery metrics and result records."""

from reidx.metrics.checks import MetricInputError
from reidx.metrics.rank import (
    MULTI_SHOT_MAP,
    PROTOCOLS,
    SINGLE_SHOT_MAP,
    RankingMetrics,
    evaluate,
    evaluate_embeddings,
)
from reidx.metrics.recovery import RECOVERY_METRICS, RecoveryResult, lpips_unavailable_reason, recovery_metrics
from reidx.metrics.results import RANKING_METRICS, EvalResult, aggregate_trials, percent, results_to_frame

__all__ = [
    "MULTI_SHOT_MAP",
    "PROTOCOLS",
    "RANKING_METRICS",
    "RECOVERY_METRICS",
    "SINGLE_SHOT_MAP",
    "EvalResult",
    "MetricInputError",
    "RankingMetrics",
    "RecoveryResult",
    "aggregate_trials",
    "evaluate",
    "evaluate_embeddings",
    "lpips_unavailable_reason",
    "percent",
    "recovery_metrics",
    "results_to_frame",
]
