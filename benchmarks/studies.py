"""What the accuracy studies share (`bench_viper.py`, `bench_study.py`): the `reidx` subprocess, the
train-skip-or-resume step of a staged study, and table cells of mean ± 95% Student-t intervals over splits
(`reidx.metrics.stats`), unpaired and paired.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from reidx.metrics.stats import mean_ci, paired_ci

#: Marker a study writes into a run folder once `reidx train` finished it.
DONE = "done"


def reidx(
    args: str, dry_run: bool = False, threads: int | None = None, log: Path | None = None
) -> subprocess.CompletedProcess | None:
    """Run one `reidx` command (``python -m reidx`` under this interpreter, so a checkout on PYTHONPATH works without
    an installed console script), echoing it; a failure stops the study. ``dry_run``: echo only.
    ``threads``: the child's torch threads (``OMP_NUM_THREADS``); ``log``: where its output goes (appended)."""
    # one write per line: runs side by side (--jobs) echo from several threads, and print's separate newline
    # write let their lines run together
    print(f"$ reidx {args}" + (f"  (output: {log})" if log else "") + "\n", end="", flush=True)
    if dry_run:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    command = [sys.executable, "-m", "reidx", *shlex.split(args)]
    if log is None:
        return subprocess.run(command, check=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
        return subprocess.run(command, check=True, env=env, stdout=output, stderr=subprocess.STDOUT)


def train_run(
    run: Path, flags: str, dry_run: bool = False, device: str = "", threads: int | None = None, logged: bool = False
) -> bool:
    """Train ``run`` with ``flags`` unless it is finished; a started run (its last.pt) resumes. True if it ran.
    ``threads``: its torch threads; ``logged``: its output into ``run``.log beside the run folder (runs side by
    side; not inside it, which `reidx train` must find empty or its own)."""
    if (run / DONE).is_file():
        return False
    resume = " --resume" if (run / "last.pt").is_file() else ""
    prefix = f"--device {device} " if device else ""
    log = run.parent / f"{run.name}.log" if logged else None
    reidx(f"{prefix}train {flags} --out {run}{resume}", dry_run, threads, log)
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
