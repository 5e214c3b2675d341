"""``reidx report``: evaluate checkpoints on prepared datasets (cached), then write tables and plots."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from reidx.console import err_console
from reidx.errors import ReidxError
from reidx.io import atomic_path
from reidx.outputs import check_file_output, check_files_folder
from reidx.report.export import FORMATS, render
from reidx.report.plots import plan_plots
from reidx.report.runner import Report, collect, parse_modes, parse_trial
from reidx.report.scoring import Scoring


def plots_directory(out: Path | None, plots: Path | None) -> Path | None:
    """``--plots``, else ``<out stem>-plots/`` beside ``--out``; None (no plots) when printing without it."""
    if plots is not None:
        return plots
    return out.parent / f"{out.stem}-plots" if out is not None else None


def run_report(
    checkpoints: list[Path],
    datasets: list[Path],
    *,
    out: Path | None = None,
    plots: Path | None = None,
    modes: list[str] | None = None,
    trial: int | None = None,
    fmt: str = "md",
    published: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 2,
    scorings: list[Scoring] | None = None,
    open_set: bool = False,
) -> Report:
    """Evaluate what is not cached, write the plots and the report (to ``out`` or stdout); return it.
    ``scorings``: the ways of scoring pairs, each its own rows (default: plain inner products only);
    ``open_set``: add the open-set operating points of each."""
    if fmt not in FORMATS:
        raise ReidxError(f"--format {fmt!r} is not supported", f"use one of {', '.join(FORMATS)}")
    inputs = [*checkpoints, *datasets]
    if out is not None:
        check_file_output(out, "--out", "report", inputs)
    directory = plots_directory(out, plots)
    if directory is not None:
        check_files_folder(directory, "--plots", inputs)
    report = collect(
        checkpoints,
        datasets,
        modes=modes,
        trial=trial,
        device=device,
        batch_size=batch_size,
        workers=workers,
        scorings=scorings,
        open_set=open_set,
    )
    planned = plan_plots(report, directory) if directory else []
    for _, path, _ in planned:  # every plot may be written before the first is
        check_file_output(path, "--plots", "image", inputs)
    drawn = [(title, draw()) for title, _, draw in planned]
    written = [(title, path) for title, path in drawn if path is not None]
    base = out.parent if out is not None else Path.cwd()
    links = [(title, Path(os.path.relpath(path, base)).as_posix()) for title, path in written]
    text = render(report, fmt, links, published)
    if out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(out, "report") as tmp:
            tmp.write_text(text)
    where = f"wrote {out}" if out else "printed the report"
    extra = f" and {len(written)} plots in {directory}" if written else ""
    err_console.print(f"report: {where}{extra}; {report.summary_line()}", highlight=False, soft_wrap=True)
    return report


__all__ = [
    "Report",
    "Scoring",
    "collect",
    "parse_modes",
    "parse_trial",
    "plots_directory",
    "run_report",
]
