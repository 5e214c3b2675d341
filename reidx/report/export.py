"""Export a :class:`~reidx.report.runner.Report` as CSV or JSON, and render it in any of :data:`FORMATS`.

CSV and JSON keep the records' fractions (every metric of the metric table, :mod:`reidx.metrics.table`), each
trial's record, and the population standard deviation besides; markdown is :mod:`reidx.report.markdown`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from reidx.console import json_text
from reidx.metrics import MULTI_SHOT_MAP, SINGLE_SHOT_MAP, results_to_frame
from reidx.report.aggregate import DIFFERENCE_METRICS
from reidx.report.evaluation import METHOD_BILINEAR
from reidx.report.markdown import OPEN_SET_NOTE, render_markdown
from reidx.report.published import (
    PUBLISHED_LABEL,
    SOURCE,
    TABLE1_DATASETS,
    TABLE1_METRICS,
    TABLE1_PROTOCOLS,
    table1_key,
    table1_rows,
)
from reidx.report.runner import RankingEntry, Report

FORMATS = ("md", "csv", "json")


def row_fields(entry: RankingEntry) -> dict[str, Any]:
    """What names a ranking record's row in CSV and JSON: label, initialisation, sources, test set, query set."""
    return {
        "dataset": entry.dataset,
        "label": entry.group.label,
        "init": entry.group.first.init,
        "sources": entry.group.sources,
        "set": entry.set_key,
        "rate": entry.rate,
        "scoring": entry.scoring,
    }


def ranking_frame(report: Report) -> pd.DataFrame:
    """Every ranking record, one row, with the report's labels, what it averages and over which trials."""
    frame = results_to_frame([e.result for e in report.ranking])
    frame.insert(0, "table", "ranking")
    for name, values in pd.DataFrame([row_fields(e) for e in report.ranking]).items():
        frame[name] = values
    frame["units"] = [" ".join(key.replace(" ", "") for key in e.units) for e in report.ranking]
    frame["pooling"] = [e.pooling for e in report.ranking]
    return frame


def per_trial_frame(report: Report) -> pd.DataFrame:
    """Every row's per-trial (or per-split) records: the values its mean and interval come from."""
    entries = [(e, key, unit) for e in report.ranking for key, unit in e.units.items()]
    frame = results_to_frame([unit for _, _, unit in entries])
    frame = frame.drop(columns=[c for c in frame if c.endswith(("_std", "_ci95"))])
    frame.insert(0, "table", "per-trial")
    for name, values in pd.DataFrame([row_fields(e) for e, _, _ in entries]).items():
        frame[name] = values
    frame["unit"] = [key for _, key, _ in entries]
    return frame


def difference_records(report: Report) -> list[dict[str, Any]]:
    """Each paired difference (row − reference) as fractions: mean, 95% half-width and the matched trials."""
    return [
        {
            "table": "paired",
            "dataset": d.dataset,
            "label": d.group.label,
            "reference": d.reference.label,
            "mode": d.mode,
            "pairs": len(d.per_trial),
            "units": " ".join(key.replace(" ", "") for key in d.per_trial),
            **d.mean,
            **{f"{name}_ci95": d.ci95[name] for name in DIFFERENCE_METRICS},
        }
        for d in report.differences
    ]


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
                        "label": label if key == "bilinear" else report.recovery_label(entry.checkpoint),
                        "evaluated_trials": " ".join(map(str, entry.trials)),
                        "count": scores["count"],
                        **scores[key],
                    }
                )
    return records


def open_set_records(report: Report) -> list[dict[str, Any]]:
    """The open-set table of every dataset (fractions; the threshold in the scores' units)."""
    return [{"table": "open-set", **record} for d in report.datasets for record in report.open_set_rows(d.label)]


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
                        **{name: value / 100 for name, value in zip(TABLE1_METRICS, ranks, strict=True)},
                    }
                )
    return records


def render_csv(report: Report, published: bool = False) -> str:
    """Ranking (means), per-trial records, paired differences, recovery and (with ``published``) the paper's
    rows, one CSV with a ``table`` column."""
    frames = [
        ranking_frame(report),
        per_trial_frame(report),
        pd.DataFrame(difference_records(report)),
        pd.DataFrame(recovery_records(report)),
        pd.DataFrame(open_set_records(report)),
    ]
    if published:
        frames.append(pd.DataFrame(published_records(report)))
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    counts = [
        c
        for c in ("num_queries", "num_valid_queries", "trials", "draws", "rate", "count", "pairs")
        + ("num_genuine", "num_impostor")
        if c in frame
    ]
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
        "rows": [
            {
                "label": g.label,
                "checkpoints": [c.path for c in g.checkpoints],
                "sources": g.sources,
                "options": g.options,
            }
            for g in report.groups
        ],
        "ranking": [
            e.result.to_dict()
            | {key: value for key, value in row_fields(e).items() if key != "dataset"}
            | {
                "dataset_label": e.dataset,
                "pooling": e.pooling,
                "per_trial": {key: unit.to_dict() for key, unit in e.units.items()},
            }
            for e in report.ranking
        ],
        "paired": difference_records(report),
        "recovery": recovery_records(report),
        "open_set": open_set_records(report),
        "open_set_definition": OPEN_SET_NOTE,
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
