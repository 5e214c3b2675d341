"""The files of a run directory (described in :mod:`reidx.train.run`): their names, ``config.json``,
``log.csv``, the run id that binds them and the line printed per epoch.

Every run has a random id, recorded in ``config.json`` and in the meta of each of its checkpoints (``last.pt``,
``epoch_N.pt``, ``best.pt``): ``train --resume`` continues a folder only from a ``last.pt`` of the run its
``config.json`` records, so another run's checkpoint dropped into it never replaces its files.
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from pathlib import Path

from reidx.io import atomic_path
from reidx.train.config import TrainConfig, command_line, run_record
from reidx.train.validation import validation_figures

LAST, BEST, LOG, RECORD = "last.pt", "best.pt", "log.csv", "config.json"
EPOCH = re.compile(r"^epoch_(\d+)\.pt$")
#: The key of the run id in ``config.json`` and in a checkpoint's meta.
RUN_ID = "run_id"
#: log column: the share of an epoch's generator steps that AMP's gradient scaler skipped (CUDA only)
AMP_SKIPPED = "amp_skipped"


def epoch_file(epoch: int) -> str:
    """The name of the copy of ``last.pt`` kept after ``epoch`` (``--save-every``)."""
    return f"epoch_{epoch}.pt"


def new_run_id() -> str:
    """A fresh run's id."""
    return uuid.uuid4().hex


def recorded_run_id(run_dir: Path) -> str | None:
    """The run id ``RUN/config.json`` records; None when it records none (a run of an older reidx) or is
    missing or unreadable."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    value = record.get(RUN_ID) if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


def write_record(run_dir: Path, config: TrainConfig, resumed: bool, run_id: str) -> None:
    """``config.json``: the run id, the options, every command line that trained this run, versions, seed."""
    path = run_dir / RECORD
    commands = json.loads(path.read_text()).get("commands", []) if resumed and path.is_file() else []
    record = {RUN_ID: run_id, **run_record(config, [*commands, command_line()])}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def latest_epoch_file(run_dir: Path) -> tuple[int, Path] | None:
    """``(N, RUN/epoch_N.pt)`` for the highest N kept in ``run_dir``, None when there is none."""
    kept = [(int(match[1]), path) for path in run_dir.glob("epoch_*.pt") if (match := EPOCH.match(path.name))]
    return max(kept, default=None)


def resume_fix(run_dir: Path) -> str:
    """How to go on when ``RUN/last.pt`` cannot be resumed, without losing what the run holds (its best.pt):
    from its latest kept epoch, or as a new run elsewhere."""
    latest = latest_epoch_file(run_dir)
    elsewhere = "train a new run with another --out (this folder stays as it is)"
    if latest is None:
        return elsewhere
    epoch, path = latest
    return f"copy {path} over {run_dir / LAST} to resume from epoch {epoch}, or {elsewhere}"


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """One CSV row per epoch (columns: every key seen, in first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def epoch_line(row: dict[str, float]) -> str:
    """One line per finished epoch: total loss and the validation figures (Rank-1 and mAP in % as in
    ``reidx report``, PSNR in dB); when AMP's scaler skipped most of the epoch's steps, how many, and the fix."""
    line = ", ".join([f"epoch {row['epoch']}: loss {row.get('total', float('nan')):.4f}", *validation_figures(row)])
    skipped = row.get(AMP_SKIPPED, 0.0)
    if skipped > 0.5:
        line += f"; mixed precision skipped {skipped:.0%} of the steps (non-finite gradients): train with --no-amp"
    return line
