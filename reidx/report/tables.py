"""Render a :class:`~reidx.report.runner.Report` as markdown, CSV or JSON.

Markdown shows percentages (one decimal, mean ± population std over trials where there are several) with
the best value of each column in bold; CSV and JSON keep the records' fractions. Every markdown table has a
caption line naming dataset, protocol, rate set, trials and checkpoints (protocols.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from reidx.console import json_text
from reidx.metrics import MULTI_SHOT_MAP, SINGLE_SHOT_MAP, EvalResult, percent, results_to_frame
from reidx.report.evaluation import NATIVE_SET, CheckpointInfo
from reidx.report.published import SOURCE, TABLE1_DATASETS, TABLE1_PROTOCOLS, table1_key, table1_rows
from reidx.report.runner import DatasetSummary, Report

FORMATS = ("md", "csv", "json")
AP_NOTE = (
    "mAP is the torchreid / open-reid AP: the mean of the precision at each true match's rank "
    "(not the Market-1501 trapezoid rule); on single-shot datasets, with one true match per gallery, it equals "
    "the mean reciprocal rank and is labelled so. Ranks and mAP in %; ± is the (population) standard deviation "
    "over trials."
)
PUBLISHED_LABEL = "published (paper)"
METHOD_BILINEAR = "bilinear up-sampling of the LR input (reference)"
ROW_HEADER = ["checkpoint [model, backbone, init]", "mode"]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; ``|`` inside cells is escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def rates_text(dataset: DatasetSummary) -> str:
    if dataset.main_set.key == NATIVE_SET:
        return "rates: none, the queries are genuine low-resolution images"
    seen = "{" + ",".join(map(str, dataset.rates)) + "}"
    unseen = f", unseen {{{','.join(map(str, dataset.unseen_rates))}}}" if dataset.unseen_rates else ""
    return f"rates: seen {seen}{unseen}"


def trials_text(dataset: DatasetSummary, pooled: bool = False) -> str:
    if pooled:
        return f"trials: the queries of all {dataset.trials_total} pooled"
    if len(dataset.trials) == dataset.trials_total:
        return f"trials: {dataset.trials_total}" + (" (mean ± std)" if dataset.trials_total > 1 else "")
    return f"trials: trial {dataset.trials[0]} of {dataset.trials_total}"


def dataset_text(dataset: DatasetSummary, queries: str, report: Report | None = None, pooled: bool = False) -> str:
    """Dataset, protocol, query set, rates and trials in one phrase (with ``report``: single-shot gallery draws;
    ``pooled``: one number over every trial's queries)."""
    protocol = f"{dataset.protocol} protocol"
    if report is not None and dataset.protocol == "single-shot":
        draws = max((e.result.draws for e in report.entries(dataset.label)), default=1)
        protocol += f" (gallery: one random image per identity, {draws} draws per trial)"
    return f"{dataset.label}: {protocol}, queries {queries}, {rates_text(dataset)}, {trials_text(dataset, pooled)}"


def short_name(checkpoint: CheckpointInfo) -> str:
    return checkpoint.label.split(" [")[0]


def checkpoints_text(checkpoints: Sequence[CheckpointInfo]) -> str:
    return "checkpoints: " + ", ".join(f"{short_name(c)} (sha256 {c.fingerprint[:12]})" for c in checkpoints)


def checkpoint_list(checkpoints: Sequence[CheckpointInfo]) -> str:
    """One line per checkpoint: label, file, hash, model, input size and initialisation."""
    return "\n".join(
        f"- {c.label}: `{c.path}`, sha256 {c.fingerprint[:12]}, {c.model} ({c.arch}), input "
        f"{c.input_size[0]}×{c.input_size[1]}, initialisation {c.init}, modes {', '.join(c.modes)}"
        for c in checkpoints
    )


def caption(*parts: str) -> str:
    return "*" + " — ".join(parts) + ".*"


def map_header(dataset: DatasetSummary) -> str:
    return SINGLE_SHOT_MAP if dataset.protocol == "single-shot" else "mAP"


def _row_keys(report: Report) -> list[tuple[CheckpointInfo, str]]:
    """(checkpoint, mode) rows in the order evaluated."""
    seen = dict.fromkeys((e.checkpoint.path, e.mode) for e in report.ranking)
    by_path = {c.path: c for c in report.checkpoints}
    return [(by_path[path], mode) for path, mode in seen]


def _column(
    report: Report, dataset: DatasetSummary, set_key: str | None, metrics: Sequence[str], rows: list
) -> list[str]:
    """One table column: per (checkpoint, mode) row the ``metrics`` joined by " / ", each with its std over
    trials where there are several and in bold where it is the column's best; "–" where not evaluated."""
    entries = {(e.checkpoint.path, e.mode): e.result for e in report.entries(dataset.label, set_key)}
    best = {name: max((round(100 * getattr(r, name), 1) for r in entries.values()), default=0.0) for name in metrics}

    def text(result: EvalResult, name: str) -> str:
        value = getattr(result, name)
        bold = len(entries) > 1 and round(100 * value, 1) == best[name]
        return percent(value, result.std[name] if result.trials > 1 else None, bold)

    results = [entries.get((checkpoint.path, mode)) for checkpoint, mode in rows]
    return ["–" if r is None else " / ".join(text(r, name) for name in metrics) for r in results]


def _label_columns(rows: list[tuple[CheckpointInfo, str]]) -> list[list[str]]:
    return [[checkpoint.label for checkpoint, _ in rows], [mode for _, mode in rows]]


def main_table(report: Report) -> str:
    """Rows = checkpoint × mode, per dataset a "R1 / R5 / R10" and an mAP column (main query set)."""
    rows = _row_keys(report)
    header, columns = list(ROW_HEADER), _label_columns(rows)
    for dataset in report.datasets:
        header += [f"{dataset.label} R1 / R5 / R10", f"{dataset.label} {map_header(dataset)}"]
        columns += [
            _column(report, dataset, None, ("rank1", "rank5", "rank10"), rows),
            _column(report, dataset, None, ("mAP",), rows),
        ]
    captions = [dataset_text(d, d.main_set.label, report) for d in report.datasets]
    return "\n\n".join(
        [
            md_table(header, list(zip(*columns, strict=True))),
            caption("Cross-resolution re-ID", *captions, checkpoints_text(report.checkpoints)),
        ]
    )


def rate_table(report: Report, dataset: DatasetSummary) -> str:
    """Rank-1 by query set (HR, each seen rate alone, mixed, unseen) for one dataset."""
    rows = _row_keys(report)
    header = [*ROW_HEADER, *(s.label for s in dataset.sets)]
    columns = _label_columns(rows) + [_column(report, dataset, s.key, ("rank1",), rows) for s in dataset.sets]
    return "\n\n".join(
        [
            md_table(header, list(zip(*columns, strict=True))),
            caption(
                f"Rank-1 (%) by query set on {dataset.label}",
                dataset_text(dataset, "as in each column", report),
                "LR r (of mixed) is the subset of the mixed queries at rate r (averaged over the trials that drew "
                "r); HR replaces each query of the main set by its HR original",
                checkpoints_text(report.checkpoints),
            ),
        ]
    )


def _recovery_cells(scores: dict[str, Any] | None) -> list[str]:
    if scores is None:
        return ["n/a"] * 3
    lpips = "n/a" if scores["lpips"] is None else f"{scores['lpips']:.3f}"
    return [f"{scores['ssim']:.3f}", f"{scores['psnr']:.2f}", lpips]


def recovery_table(report: Report, dataset: DatasetSummary) -> str | None:
    """SSIM / PSNR / LPIPS of G's output (and of bilinear up-sampling) vs the HR originals, per LR query set."""
    entries = [e for e in report.recovery if e.dataset == dataset.label]
    sets = {name: s["label"] for e in entries for name, s in e.payload["sets"].items()}
    if not entries:
        return None
    if not sets:
        return caption(f"HR recovery on {dataset.label}: n/a, its queries have no HR originals (native LR)")
    header = ["method"] + [
        f"{label} {metric}" for label in sets.values() for metric in ("SSIM ↑", "PSNR dB ↑", "LPIPS ↓")
    ]
    rows, reasons = [], set()
    for entry in entries:
        checkpoint = entry.checkpoint
        if not checkpoint.can_recover:
            rows.append([f"{checkpoint.label} (no G: does not recover images)"] + ["n/a"] * (len(header) - 1))
            continue
        cells = [c for name in sets for c in _recovery_cells(entry.payload["sets"].get(name, {}).get("model"))]
        rows.append([checkpoint.label, *cells])
    references: dict[tuple[int, int], list[str]] = {}
    for entry in entries:
        cells = [c for name in sets for c in _recovery_cells(entry.payload["sets"].get(name, {}).get("bilinear"))]
        references.setdefault(entry.checkpoint.input_size, cells)
    for size, cells in references.items():
        suffix = f" at {size[0]}×{size[1]}" if len(references) > 1 else ""
        rows.append([METHOD_BILINEAR + suffix, *cells])
    for entry in entries:
        for scores in entry.payload["sets"].values():
            reasons |= {
                s["lpips_reason"] for key in ("model", "bilinear") if (s := scores.get(key)) and s["lpips_reason"]
            }
    counts = ", ".join(f"{label}: {entries[0].payload['sets'][name]['count']} images" for name, label in sets.items())
    sizes = ", ".join(f"{h}×{w}" for h, w in references)
    notes = [
        f"HR recovery on {dataset.label}",
        dataset_text(dataset, "; ".join(sets.values()), pooled=True),
        f"every distinct LR query ({counts}) vs its HR original at model input size {sizes}, pixels in [0, 1]",
        checkpoints_text([e.checkpoint for e in entries]),
    ]
    notes += [f"LPIPS n/a: {reason}" for reason in sorted(reasons)]
    return "\n\n".join([md_table(header, rows), caption(*notes)])


def published_table(report: Report) -> str | None:
    """The paper's Table 1 rows for the report's datasets, apart from the measured ones."""
    names = [d.name for d in report.datasets]
    rows = table1_rows(names)
    if not rows:
        return None
    keys = list(rows[0].ranks)
    header = ["method", *(f"{TABLE1_DATASETS[k]} R1 / R5 / R10" for k in keys)]
    body = [
        [
            f"{row.method}, {PUBLISHED_LABEL}",
            *("–" if row.ranks[k] is None else " / ".join(f"{v:.1f}" for v in row.ranks[k]) for k in keys),
        ]
        for row in rows
    ]
    return "\n\n".join(
        [
            md_table(header, body),
            caption(
                f"{PUBLISHED_LABEL}: {SOURCE}, Table 1, Rank-1 / 5 / 10 (%), copied verbatim, not measured here",
                "protocol as in the paper: " + "; ".join(f"{TABLE1_DATASETS[k]} {TABLE1_PROTOCOLS[k]}" for k in keys),
                "rates: queries down-sampled at r ∈ {2,3,4} (CAVIAR: genuine LR)",
                "checkpoint: the authors' models (not available to reidx); no mAP was published",
            ),
        ]
    )


def render_markdown(report: Report, plots: Sequence[tuple[str, str]] = (), published: bool = False) -> str:
    """The whole report; ``plots`` are (title, relative link) pairs."""
    parts = ["# reidx report", AP_NOTE, checkpoint_list(report.checkpoints)]
    if report.notes:
        parts.append("\n".join(f"- {note}" for note in report.notes))
    parts += ["## Cross-resolution re-ID", main_table(report)]
    for dataset in report.datasets:
        parts += [f"## Rank-1 by query rate: {dataset.label}", rate_table(report, dataset)]
    for dataset in report.datasets:
        table = recovery_table(report, dataset)
        if table:
            parts += [f"## HR recovery: {dataset.label}", table]
    if published:
        table = published_table(report)
        parts += [
            "## Published (paper), not measured here",
            table or caption(f"{PUBLISHED_LABEL}: none of these datasets is in {SOURCE} Table 1"),
        ]
    if plots:
        parts += ["## Plots", *(f"![{title}]({link})" for title, link in plots)]
    return "\n\n".join(parts) + "\n"


def ranking_frame(report: Report) -> pd.DataFrame:
    """Every ranking record, one row, with the report's labels."""
    frame = results_to_frame([e.result for e in report.ranking])
    frame.insert(0, "table", "ranking")
    frame["dataset"] = [e.dataset for e in report.ranking]
    frame["label"] = [e.checkpoint.label for e in report.ranking]
    frame["init"] = [e.checkpoint.init for e in report.ranking]
    frame["set"] = [e.set_key for e in report.ranking]
    frame["rate"] = [e.rate for e in report.ranking]
    return frame


def recovery_records(report: Report) -> list[dict[str, Any]]:
    """One record per dataset, LR query set and method (checkpoint or the bilinear reference)."""
    records = []
    for entry in report.recovery:
        for name, scores in entry.payload["sets"].items():
            methods = [("bilinear", METHOD_BILINEAR)]
            if entry.checkpoint.can_recover:
                methods.insert(0, ("model", entry.checkpoint.label))
            for key, label in methods:
                records.append(
                    {
                        "table": "recovery",
                        "dataset": entry.dataset,
                        "query_set": scores["label"],
                        "set": name,
                        "checkpoint": entry.checkpoint.path,
                        "label": label,
                        "count": scores["count"],
                        **scores[key],
                    }
                )
    return records


def published_records(report: Report) -> list[dict[str, Any]]:
    """The paper's Table 1 rows as fractions, labelled as published."""
    records = []
    for row in table1_rows([d.name for d in report.datasets]):
        for key, ranks in row.ranks.items():
            if ranks is not None:
                records.append(
                    {
                        "table": PUBLISHED_LABEL,
                        "dataset": TABLE1_DATASETS[key],
                        "label": row.method,
                        "protocol": TABLE1_PROTOCOLS[key],
                        "checkpoint": SOURCE,
                        **{name: value / 100 for name, value in zip(("rank1", "rank5", "rank10"), ranks, strict=True)},
                    }
                )
    return records


def render_csv(report: Report, published: bool = False) -> str:
    """Ranking, recovery and (with ``published``) the paper's rows, one CSV with a ``table`` column."""
    frames = [ranking_frame(report), pd.DataFrame(recovery_records(report))]
    if published:
        frames.append(pd.DataFrame(published_records(report)))
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    counts = [c for c in ("num_queries", "num_valid_queries", "trials", "draws", "rate", "count") if c in frame]
    frame[counts] = frame[counts].astype("Int64")  # integral even beside the other tables' empty cells
    return frame.to_csv(index=False)


def render_json(report: Report, plots: Sequence[str] = (), published: bool = False) -> str:
    """The same results as one JSON document (fractions, CMC curves included)."""
    document: dict[str, Any] = {
        "map_definition": {"multi-shot": MULTI_SHOT_MAP, "single-shot": SINGLE_SHOT_MAP},
        "checkpoints": [c.to_dict() | {"label": c.label} for c in report.checkpoints],
        "datasets": [
            {
                "label": d.label,
                "directory": str(d.directory),
                "dataset": d.name,
                "protocol": d.protocol,
                "rates": d.rates,
                "unseen_rates": d.unseen_rates,
                "trials": d.trials,
                "trials_total": d.trials_total,
                "published_column": table1_key(d.name),
            }
            for d in report.datasets
        ],
        "ranking": [
            e.result.to_dict()
            | {
                "dataset_label": e.dataset,
                "label": e.checkpoint.label,
                "init": e.checkpoint.init,
                "set": e.set_key,
                "rate": e.rate,
            }
            for e in report.ranking
        ],
        "recovery": recovery_records(report),
        "notes": report.notes,
        "plots": list(plots),
    }
    if published:
        document["published"] = published_records(report)
    return json_text(document) + "\n"


def render(report: Report, fmt: str, plots: Sequence[tuple[str, str]] = (), published: bool = False) -> str:
    """The report in ``fmt`` (md | csv | json)."""
    if fmt == "md":
        return render_markdown(report, plots, published)
    if fmt == "csv":
        return render_csv(report, published)
    return render_json(report, [link for _, link in plots], published)
