"""PNG plots of a report (matplotlib's Agg canvas, no pyplot state): CMC curves, Rank-1 versus rate, a
recovery grid (LR | recovered | HR) and ranked-list montages (the retrieval montage)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from textwrap import fill

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid

from reidx.io import atomic_path, load_image
from reidx.metrics.table import HEADLINE, spec
from reidx.report.runner import DatasetSummary, Report
from reidx.retrieval import Hit, QueryResult, draw_montage

CMC_RANKS = 20
#: The white gap between the recovery grid's tiles (pixels), and the tile standing for a missing sample.
GRID_GAP, GREY = 2, "lightgrey"
Plot = tuple[str, Path]
#: A plot to draw: its title, its file and what draws it (giving the file, or None when there is nothing to draw).
Planned = tuple[str, Path, Callable[[], Path | None]]


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "plot"


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG atomically."""
    FigureCanvasAgg(figure)
    with atomic_path(path, "image") as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def cmc_plot(report: Report, dataset: DatasetSummary, path: Path) -> Path:
    """CMC (ranks 1-20) of every checkpoint and mode on the main query set."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    ranks = range(1, CMC_RANKS + 1)
    for entry in report.entries(dataset.label):
        cmc = [100 * value for value in entry.result.cmc[:CMC_RANKS]]
        axes.plot(ranks, cmc, marker="o", markersize=3, label=f"{entry.group.label} · {entry.mode}")
    axes.set_xticks([1, 5, 10, 15, 20])
    axes.set(
        xlabel="rank",
        ylabel="matching rate (%)",
        xlim=(1, CMC_RANKS),
        ylim=(0, 100),
        title=f"CMC, {dataset.label} ({dataset.protocol}, queries {dataset.main_set.label})",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    return save_figure(figure, path)


def rate_plot(report: Report, dataset: DatasetSummary, path: Path) -> Path | None:
    """Rank-1 versus the query down-sampling rate (1 = HR queries), one line per checkpoint and mode; None
    when no query set has a single rate (genuine LR queries)."""
    rated = [s for s in dataset.sets if s.rate is not None]
    if not rated:
        return None
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    series: dict[str, list[tuple[int, float]]] = {}
    for query_set in rated:
        for entry in report.entries(dataset.label, query_set.key):
            label = f"{entry.group.label} · {entry.mode}"
            series.setdefault(label, []).append((query_set.rate, 100 * entry.result.metrics[HEADLINE]))
    for label, points in series.items():
        points.sort()
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ticks = sorted({s.rate for s in rated})
    axes.set_xticks(
        ticks, [f"{r}\n(HR)" if r == 1 else f"{r}\n(unseen)" if r in dataset.unseen_rates else str(r) for r in ticks]
    )
    axes.set(
        xlabel="query down-sampling rate r",
        ylabel=f"{spec(HEADLINE).title} (%)",
        ylim=(0, 100),
        title=f"Rank-1 vs rate, {dataset.label} ({dataset.protocol})",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, path)


def recovery_grid(report: Report, dataset: DatasetSummary, path: Path) -> Path | None:
    """Rows = a few LR queries; columns = LR (bilinear to input size) | each row's G output (its first
    checkpoint's) | HR original, laid out by ``make_grid``."""
    firsts = [group.first for group in report.groups]
    entries = [
        e for e in report.recovery if e.dataset == dataset.label and e.payload["samples"] and e.checkpoint in firsts
    ]
    if not entries:
        return None
    height, width = entries[0].checkpoint.input_size
    samples = entries[0].payload["samples"]
    titles = ["LR (bilinear)", *(f"G: {report.recovery_label(e.checkpoint)}" for e in entries), "HR original"]
    tiles = []
    for sample in samples:
        row = [load_image(sample["lr"])]
        for entry in entries:
            match = next((s["recovered"] for s in entry.payload["samples"] if s["lr"] == sample["lr"]), None)
            row.append(_image(entry.payload["images"][match]) if match else Image.new("RGB", (width, height), GREY))
        row.append(load_image(sample["hr"]))
        tiles += [pil_to_tensor(tile.resize((width, height), Image.BILINEAR)) for tile in row]
    grid = make_grid(torch.stack(tiles), nrow=len(titles), padding=GRID_GAP, pad_value=255)
    figure = Figure(figsize=(1.2 + 1.6 * len(titles), 0.3 + 2.4 * len(samples)), layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(grid.permute(1, 2, 0).numpy())
    columns = [GRID_GAP + (GRID_GAP + width) * i + width / 2 for i in range(len(titles))]
    axes.set_xticks(columns, [fill(title, 22) for title in titles], fontsize="x-small")
    axes.xaxis.tick_top()
    rows = [GRID_GAP + (GRID_GAP + height) * i + height / 2 for i in range(len(samples))]
    axes.set_yticks(rows, [f"LR r={sample['rate']}" for sample in samples], fontsize="x-small")
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    figure.suptitle(f"HR recovery, {dataset.label} (queries {dataset.main_set.label})", fontsize="small")
    return save_figure(figure, path)


def _image(image: Image.Image | Path) -> Image.Image:
    """A cached image: its PNG file in the evaluation cache (or the image itself where it was not cached)."""
    return image if isinstance(image, Image.Image) else load_image(image)


def montage(report: Report, dataset: DatasetSummary, checkpoint_path: str, mode: str, path: Path) -> Path:
    """Ranked lists of a few queries (green = same identity), drawn by the retrieval montage."""
    checkpoint = next(c for c in report.checkpoints if c.path == checkpoint_path)
    results = [
        QueryResult(
            example["query"],
            example["pid"],
            example["camid"],
            [Hit(**hit) for hit in example["results"]],
            example["min_score"],
        )
        for example in report.examples[(checkpoint_path, dataset.label, mode)]
    ]
    return draw_montage(results, path, checkpoint.input_size)


def plan_plots(report: Report, directory: Path) -> list[Planned]:
    """Every plot of the report into ``directory``, not drawn yet (their files are known before any is written)."""
    plots: list[Planned] = []
    for dataset in report.datasets:
        name = slug(dataset.label)
        plots += [
            (f"CMC, {dataset.label}", directory / f"cmc-{name}.png", partial(cmc_plot, report, dataset)),
            (
                f"Rank-1 vs rate, {dataset.label}",
                directory / f"rank1-vs-rate-{name}.png",
                partial(rate_plot, report, dataset),
            ),
            (
                f"HR recovery, {dataset.label}",
                directory / f"recovery-{name}.png",
                partial(recovery_grid, report, dataset),
            ),
        ]
        for checkpoint in (group.first for group in report.groups):  # one montage per row
            modes = [
                mode for path, label, mode in report.examples if path == checkpoint.path and label == dataset.label
            ]
            if modes:
                mode = "fused" if "fused" in modes else modes[0]
                run = Path(checkpoint.path)
                plots.append(
                    (
                        f"Ranked lists, {dataset.label}, {run.parent.name}/{run.name} {mode} (full gallery)",
                        directory / f"ranked-{name}-{slug(f'{run.parent.name}-{run.stem}')}-{mode}.png",
                        partial(montage, report, dataset, checkpoint.path, mode),
                    )
                )
    return [(title, path, partial(draw, path=path)) for title, path, draw in plots]
