"""What the accuracy studies share (`bench_viper.py`, `bench_study.py`): the `reidx` subprocess, the
train-skip-or-resume step of a staged study, and mean ± 95% Student-t intervals over splits, unpaired and paired.
"""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
from pathlib import Path

#: Marker a study writes into a run folder once `reidx train` finished it.
DONE = "done"

#: t_{0.975, df} for df = 1..30 (two-sided 95% Student t); beyond 30 the normal 1.96 is used
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def reidx(args: str, dry_run: bool = False) -> subprocess.CompletedProcess | None:
    """Run one `reidx` command (this interpreter's), echoing it; a failure stops the study. ``dry_run``: echo only."""
    print(f"$ reidx {args}", flush=True)
    if dry_run:
        return None
    return subprocess.run([str(Path(sys.executable).with_name("reidx")), *shlex.split(args)], check=True)


def train_run(run: Path, flags: str, dry_run: bool = False, device: str = "") -> bool:
    """Train ``run`` with ``flags`` unless it is finished; a started run (its last.pt) resumes. True if it ran."""
    if (run / DONE).is_file():
        return False
    resume = " --resume" if (run / "last.pt").is_file() else ""
    prefix = f"--device {device} " if device else ""
    reidx(f"{prefix}train {flags} --out {run}{resume}", dry_run)
    if not dry_run:
        (run / DONE).touch()
    return True


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and 95% confidence half-width (Student t on the sample standard deviation); None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    return mean, (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)


def paired_ci(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], float, float | None]:
    """Splits both have, and mean ± 95% half-width of the per-split difference a − b over them."""
    splits = sorted(set(a) & set(b))
    return (splits, *mean_ci([a[s] - b[s] for s in splits])) if splits else (splits, math.nan, None)


def cell(values: dict[int, float] | None, digits: int = 1) -> str:
    """``mean ± half-width`` over the splits (``mean`` alone for one split, – for none)."""
    if not values:
        return "–"
    mean, half = mean_ci(list(values.values()))
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def diff_cell(a: dict[int, float] | None, b: dict[int, float] | None) -> str:
    """The paired per-split difference a − b as ``mean ± half-width``, or – when no split has both."""
    splits, mean, half = paired_ci(a or {}, b or {})
    if not splits:
        return "–"
    return f"{mean:+.1f}" + (f" ± {half:.1f}" if half is not None else "")
