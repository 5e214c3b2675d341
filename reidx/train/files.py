"""The files of a run directory (described in :mod:`reidx.train.run`): their names, ``config.json``,
``log.csv`` and the line printed per epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from reidx.io import atomic_path
from reidx.metrics.results import percent
from reidx.train.config import TrainConfig, command_line, run_record

LAST, BEST, LOG, RECORD = "last.pt", "best.pt", "log.csv", "config.json"


def write_record(run_dir: Path, config: TrainConfig, resumed: bool) -> None:
    """``config.json``: the options, every command line that trained this run, versions, seed."""
    path = run_dir / RECORD
    commands = json.loads(path.read_text()).get("commands", []) if resumed and path.is_file() else []
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(run_record(config, [*commands, command_line()]), indent=2) + "\n")


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
    ``reidx report``, PSNR in dB)."""
    parts = [f"epoch {row['epoch']}: loss {row.get('total', float('nan')):.4f}"]
    ranks = {"val_rank1": "val Rank-1", "val_mAP": "mAP"}
    parts += [f"{label} {percent(row[name])}%" for name, label in ranks.items() if name in row]
    psnrs = {"val_psnr": "PSNR", "val_psnr_bilinear": "bilinear PSNR"}
    parts += [f"{label} {row[name]:.2f} dB" for name, label in psnrs.items() if name in row]
    return ", ".join(parts)
