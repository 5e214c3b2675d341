"""Intervals over trials: the mean with its 95% confidence half-width (Student t on the per-trial values), and
paired per-trial differences between two models (each trial's difficulty cancels)."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence

#: t_{0.975, df} for df = 1..30 (two-sided 95% Student t); beyond 30 the normal 1.96 is used
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
NORMAL975 = 1.96


def t975(df: int) -> float:
    """The two-sided 95% Student t quantile for ``df >= 1`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    return T975[df - 1] if df <= len(T975) else NORMAL975


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and 95% confidence half-width (Student t on the sample standard deviation, n − 1 df); None for one
    value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)


def natural_order(key: Hashable) -> tuple[str, int, str]:
    """Sort key of a trial key: numbers in numeric order, "trial 10" after "trial 9"."""
    text = str(key)
    match = re.fullmatch(r"(.*?)(\d+)", text)
    return (match[1], int(match[2]), "") if match else (text, -1, text)


def paired_ci(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> tuple[list, float, float | None]:
    """The trials both have (sorted), and mean ± 95% half-width of the per-trial difference a − b over them
    (nan and None when none is shared)."""
    shared = sorted(set(a) & set(b), key=natural_order)
    if not shared:
        return shared, math.nan, None
    return (shared, *mean_ci([a[key] - b[key] for key in shared]))
