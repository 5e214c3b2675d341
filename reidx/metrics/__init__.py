"""Metrics: the metric table of record, ranking metrics (CMC/mAP, multi- and single-shot), recovery metrics and
result records."""

from reidx.metrics.checks import MetricInputError
from reidx.metrics.rank import (
    MULTI_SHOT_MAP,
    PROTOCOLS,
    SINGLE_SHOT_MAP,
    RankingMetrics,
    evaluate,
    evaluate_blocks,
    evaluate_embeddings,
)
from reidx.metrics.recovery import RecoveryResult, lpips_unavailable_reason, recovery_metrics
from reidx.metrics.results import EvalResult, aggregate_trials, results_to_frame
from reidx.metrics.table import (
    METRICS,
    RANKING_METRICS,
    RANKING_SPECS,
    RECOVERY_METRICS,
    RECOVERY_SPECS,
    MetricSpec,
    percent,
)

__all__ = [
    "METRICS",
    "MULTI_SHOT_MAP",
    "PROTOCOLS",
    "RANKING_METRICS",
    "RANKING_SPECS",
    "RECOVERY_METRICS",
    "RECOVERY_SPECS",
    "SINGLE_SHOT_MAP",
    "EvalResult",
    "MetricInputError",
    "MetricSpec",
    "RankingMetrics",
    "RecoveryResult",
    "aggregate_trials",
    "evaluate",
    "evaluate_blocks",
    "evaluate_embeddings",
    "lpips_unavailable_reason",
    "percent",
    "recovery_metrics",
    "results_to_frame",
]
