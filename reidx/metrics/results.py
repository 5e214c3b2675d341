"""Result records: one evaluation, or the mean of several trials with its spread, as typed records.

Every number is a plain Python float or int (never a NumPy scalar), so records survive JSON and
``torch.load(..., weights_only=True)``. A record carries what protocols.md says every result must name:
dataset, protocol, query set and rates, trials, checkpoint, and which mAP definition it uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from reidx.metrics.checks import MetricInputError
from reidx.metrics.rank import RankingMetrics
from reidx.metrics.stats import mean_ci
from reidx.metrics.table import CMC_LENGTH, RANKING_METRICS, percent

__all__ = ["EvalResult", "aggregate_trials", "percent", "results_to_frame"]

_COUNTS = ("num_queries", "num_valid_queries", "trials", "draws")
_SHARED = ("dataset", "protocol", "query_set", "rates", "mode", "map_definition", "draws")


@dataclass(frozen=True)
class EvalResult:
    """One evaluation (``trials == 1``) or the mean over trials, with the spread in ``std`` and ``ci95``.

    ``metrics`` maps each of ``RANKING_METRICS`` (the metric table's ranking rows) to its value; a metric also
    reads as an attribute (``result.mAP``), and ``to_dict`` writes the metrics as top-level keys.
    ``std`` maps each of them to its population standard deviation over trials (0.0 for one trial), ``ci95``
    to the half-width of the mean's 95% confidence interval (Student t on the per-trial values, n − 1 degrees
    of freedom; 0.0 for one trial).
    ``cmc`` holds the first ``CMC_LENGTH`` ranks. ``num_queries`` and ``num_valid_queries`` are summed over
    trials.
    """

    dataset: str
    protocol: str
    query_set: str  # e.g. "LR {2,3,4} mixed", "LR 8 unseen", "HR"
    rates: tuple[int, ...]
    checkpoint: str
    mode: str  # the embedding evaluated: "fused", "f" or "g"
    metrics: dict[str, float]
    map_definition: str
    cmc: tuple[float, ...]
    num_queries: int
    num_valid_queries: int
    trials: int = 1
    draws: int = 1
    std: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [name for name in RANKING_METRICS if name not in self.metrics]
        unknown = sorted(set(self.metrics) - set(RANKING_METRICS))
        if missing or unknown:
            raise MetricInputError(f"a result needs the metrics {list(RANKING_METRICS)}, got {list(self.metrics)}")
        plain: dict[str, Any] = {"metrics": {name: float(self.metrics[name]) for name in RANKING_METRICS}}
        plain |= {name: int(getattr(self, name)) for name in _COUNTS}
        plain["rates"] = tuple(int(r) for r in self.rates)
        plain["cmc"] = tuple(float(c) for c in self.cmc)
        plain["std"] = {name: float(self.std.get(name, 0.0)) for name in RANKING_METRICS}
        plain["ci95"] = {name: float(self.ci95.get(name, 0.0)) for name in RANKING_METRICS}
        for name, value in plain.items():
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> float:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(name)

    @classmethod
    def from_metrics(
        cls,
        metrics: RankingMetrics,
        *,
        dataset: str,
        query_set: str,
        rates: Sequence[int],
        checkpoint: str,
        mode: str,
    ) -> EvalResult:
        """The record of one trial from ``evaluate``'s output (which needs ``max_rank >= CMC_LENGTH``)."""
        cmc = metrics.cmc
        if len(cmc) < CMC_LENGTH:
            raise MetricInputError(
                f"the CMC has {len(cmc)} ranks but a record needs {CMC_LENGTH}",
                f"evaluate with max_rank >= {CMC_LENGTH}",
            )
        return cls(
            dataset=dataset,
            protocol=metrics.protocol,
            query_set=query_set,
            rates=tuple(rates),
            checkpoint=checkpoint,
            mode=mode,
            metrics={name: metrics.value(name) for name in RANKING_METRICS},
            map_definition=metrics.map_definition,
            cmc=tuple(cmc[:CMC_LENGTH]),
            num_queries=metrics.num_queries,
            num_valid_queries=metrics.num_valid_queries,
            draws=metrics.draws,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the metrics as top-level keys (after ``mode``), lists for tuples, plain floats and ints."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "metrics":
                out |= value
            else:
                out[item.name] = (
                    list(value) if isinstance(value, tuple) else value.copy() if isinstance(value, dict) else value
                )
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Inverse of ``to_dict``; unknown or missing keys are an error."""
        names = {f.name for f in fields(cls)} - {"metrics"}
        unknown = sorted(set(data) - names - set(RANKING_METRICS))
        if unknown:
            raise MetricInputError(f"unknown result fields {unknown}", "was the file written by reidx?")
        missing = [name for name in RANKING_METRICS if name not in data]
        if missing:
            raise MetricInputError(f"incomplete result record: no {', '.join(missing)}", "was it written by reidx?")
        rest = {key: value for key, value in data.items() if key not in RANKING_METRICS}
        try:
            return cls(**rest, metrics={name: data[name] for name in RANKING_METRICS})
        except TypeError as err:
            raise MetricInputError(f"incomplete result record: {err}", "was it written by reidx?") from err


def aggregate_trials(results: Sequence[EvalResult]) -> EvalResult:
    """Mean over single-trial records of one setting, with each metric's population std in ``std`` and the
    half-width of its 95% confidence interval in ``ci95``."""
    if not results:
        raise MetricInputError("no trial results to aggregate")
    first = results[0]
    for r in results:
        differing = [name for name in _SHARED if getattr(r, name) != getattr(first, name)]
        if differing:
            raise MetricInputError(f"trials differ in {', '.join(differing)}", "aggregate one setting")
        if r.trials != 1:
            raise MetricInputError(f"aggregate_trials takes single-trial records, got {r.trials} trials")
    values = {name: np.array([getattr(r, name) for r in results]) for name in RANKING_METRICS}
    checkpoints = list(dict.fromkeys(r.checkpoint for r in results))
    return EvalResult(
        **{name: getattr(first, name) for name in _SHARED},
        checkpoint=", ".join(checkpoints),
        metrics={name: v.mean() for name, v in values.items()},
        cmc=tuple(np.mean([r.cmc for r in results], axis=0)),
        num_queries=sum(r.num_queries for r in results),
        num_valid_queries=sum(r.num_valid_queries for r in results),
        trials=len(results),
        std={name: v.std() for name, v in values.items()},
        ci95={name: mean_ci(v.tolist())[1] or 0.0 for name, v in values.items()},
    )


def results_to_frame(results: Sequence[EvalResult]) -> pd.DataFrame:
    """One row per record: labels, metrics, ``<metric>_std`` and ``<metric>_ci95`` columns (the CMC stays in the
    JSON)."""
    rows = []
    for r in results:
        row = r.to_dict()
        del row["cmc"], row["std"], row["ci95"]
        row["rates"] = ",".join(str(rate) for rate in r.rates)
        row |= {f"{name}_std": r.std[name] for name in RANKING_METRICS}
        row |= {f"{name}_ci95": r.ci95[name] for name in RANKING_METRICS}
        rows.append(row)
    return pd.DataFrame(rows)
