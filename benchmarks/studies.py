"""What the accuracy studies share (`bench_viper.py`, `bench_study.py`): the `reidx` subprocess, the
train-skip-or-resume step of a staged study, and table cells of mean ± 95% Student-t intervals over splits
(`reidx.metrics.stats`), unpaired and paired.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from reidx.metrics.stats import mean_ci, paired_ci

#: Marker a study writes into a run folder once `reidx train` finished it.
DONE = "done"


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
