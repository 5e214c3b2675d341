"""Render a :class:`~reidx.report.runner.Report` as markdown (CSV and JSON: :mod:`reidx.report.export`).

Markdown shows percentages (one decimal, mean ± the 95% confidence half-width over trials where there are
several) with the best value of each column in bold. The metric columns are the metric table's
(:mod:`reidx.metrics.table`). Every markdown table has a caption line naming dataset, protocol, rate set,
exactly what was averaged over which trials, and checkpoints (protocols.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reidx.metrics import RECOVERY_SPECS, EvalResult, MetricSpec, percent
from reidx.metrics.table import HEADLINE, SHOWN_RANKING, columns, spec
from reidx.report.aggregate import trial_list
from reidx.report.evaluation import METHOD_BILINEAR, CheckpointInfo
from reidx.report.groups import RunGroup, group_name
from reidx.report.plan import NATIVE_SET
from reidx.report.published import PUBLISHED_LABEL, SOURCE, TABLE1_DATASETS, TABLE1_PROTOCOLS, table1_rows
from reidx.report.runner import DatasetSummary, Report
from reidx.report.scoring import PLAIN_LABEL

_PERCENT = ["Ranks", *(s.label for s in SHOWN_RANKING if s.cmc_rank is None)]
#: The report's opening note: each shown metric's definition, units, intervals and rows.
AP_NOTE = " ".join(
    [
        *(s.note for s in SHOWN_RANKING if s.note),
        f"{', '.join(_PERCENT[:-1])} and {_PERCENT[-1]} in %; ± is the half-width of the 95% confidence interval of "
        "the mean over trials (Student t on the per-trial values, n − 1 degrees of freedom). Checkpoints that differ "
        "only in the split they trained on are one row, one trial each; the first row is the reference of the paired "
        "differences.",
    ]
)
ROW_HEADER = ["checkpoint [model, backbone, init; what differs; training sources]", "mode"]
DIFFERENCE_HEADER = ["row − reference", "mode", "pairs"]


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


def trials_text(report: Report, dataset: DatasetSummary, set_key: str | None = None) -> str:
    """What each row's numbers on ``dataset`` average, e.g. "trials: mean ± 95% CI over 10 test trials (0-9) of one
    checkpoint (Student t, 9 df)", per row where the rows differ."""
    phrases: dict[str, list[str]] = {}
    for entry in report.entries(dataset.label, set_key):
        names = phrases.setdefault(entry.pooling, [])
        if group_name(entry.group) not in names:
            names.append(group_name(entry.group))
    if len(phrases) == 1:
        return f"trials: {next(iter(phrases))}"
    return "trials: " + "; ".join(f"{', '.join(names)}: {phrase}" for phrase, names in phrases.items())


def dataset_text(dataset: DatasetSummary, queries: str, trials: str, report: Report | None = None) -> str:
    """Dataset, protocol, query set, rates and ``trials`` in one phrase (with ``report``: single-shot gallery
    draws)."""
    protocol = f"{dataset.protocol} protocol"
    if report is not None and dataset.protocol == "single-shot":
        draws = max((e.result.draws for e in report.entries(dataset.label)), default=1)
        protocol += f" (gallery: one random image per identity, {draws} draws per trial)"
    return f"{dataset.label}: {protocol}, queries {queries}, {rates_text(dataset)}, {trials}"


def checkpoints_text(checkpoints: Sequence[CheckpointInfo]) -> str:
    return "checkpoints: " + ", ".join(f"{c.name} (sha256 {c.fingerprint[:12]})" for c in checkpoints)


def checkpoint_list(checkpoints: Sequence[CheckpointInfo]) -> str:
    """One line per checkpoint: label, file, hash, model, input size and initialisation."""
    return "\n".join(
        f"- {c.label}: `{c.path}`, sha256 {c.fingerprint[:12]}, {c.model} ({c.arch}), input "
        f"{c.input_size[0]}×{c.input_size[1]}, initialisation {c.init}, modes {', '.join(c.modes)}"
        for c in checkpoints
    )


def caption(*parts: str) -> str:
    return "*" + " — ".join(parts) + ".*"


def column_header(specs: Sequence[MetricSpec], dataset: DatasetSummary) -> str:
    """A metric column's heading: its metrics' labels under the dataset's protocol, "R1 / R5 / R10"."""
    return " / ".join(s.label_for(dataset.protocol) for s in specs)


def _row_keys(report: Report) -> list[tuple[RunGroup, str]]:
    """(row, mode) pairs in the order evaluated."""
    seen = dict.fromkeys((e.group.key, e.mode) for e in report.ranking)
    by_key = {g.key: g for g in report.groups}
    return [(by_key[key], mode) for key, mode in seen]


def _column(
    report: Report, dataset: DatasetSummary, set_key: str | None, metrics: Sequence[MetricSpec], rows: list
) -> list[str]:
    """One table column: per (row, mode) the ``metrics`` joined by " / ", each with its 95% CI half-width over
    trials where there are several and in bold where it is the column's best; "–" where not evaluated."""
    entries = {(e.group.key, e.mode): e.result for e in report.entries(dataset.label, set_key)}
    best = {
        m.name: (max if m.higher_is_better else min)(
            (round(100 * r.metrics[m.name], 1) for r in entries.values()), default=0.0
        )
        for m in metrics
    }

    def text(result: EvalResult, name: str) -> str:
        value = result.metrics[name]
        bold = len(entries) > 1 and round(100 * value, 1) == best[name]
        return percent(value, result.ci95[name] if result.trials > 1 else None, bold)

    results = [entries.get((group.key, mode)) for group, mode in rows]
    return ["–" if r is None else " / ".join(text(r, m.name) for m in metrics) for r in results]


def _label_columns(rows: list[tuple[RunGroup, str]]) -> list[list[str]]:
    return [[group.label for group, _ in rows], [mode for _, mode in rows]]


def main_table(report: Report) -> str:
    """Rows = checkpoint group × mode, per dataset a column per metric column of the table ("R1 / R5 / R10",
    mAP, ...) on the main query set."""
    rows = _row_keys(report)
    header, cells = list(ROW_HEADER), _label_columns(rows)
    for dataset in report.datasets:
        header += [f"{dataset.label} {column_header(specs, dataset)}" for specs in columns()]
        cells += [_column(report, dataset, None, specs, rows) for specs in columns()]
    captions = [dataset_text(d, d.main_set.label, trials_text(report, d), report) for d in report.datasets]
    return "\n\n".join(
        [
            md_table(header, list(zip(*cells, strict=True))),
            caption("Cross-resolution re-ID", *captions, checkpoints_text(report.checkpoints)),
        ]
    )


def difference_cell(mean: float, half: float | None) -> str:
    """A paired difference in percentage points: ``+2.0 ± 1.3`` (``+2.0`` for one pair)."""
    return f"{100 * mean:+.1f}" + (f" ± {100 * half:.1f}" if half is not None else "")


def difference_table(report: Report, dataset: DatasetSummary) -> str | None:
    """Paired per-trial differences (row − reference) on the dataset's main query set; None without any."""
    differences = [d for d in report.differences if d.dataset == dataset.label]
    if not differences:
        return None
    headline = spec(HEADLINE)
    header = [
        *DIFFERENCE_HEADER,
        *(f"Δ {s.label_for(dataset.protocol)}" for s in SHOWN_RANKING),
        f"Δ {headline.label} per trial",
    ]
    body = [
        [
            d.group.label,
            d.mode,
            str(len(d.per_trial)),
            *(difference_cell(d.mean[s.name], d.ci95[s.name]) for s in SHOWN_RANKING),
            " ".join(f"{key}: {100 * values[HEADLINE]:+.1f}" for key, values in d.per_trial.items()),
        ]
        for d in differences
    ]
    matched = "; ".join(f"{group_name(d.group)} {d.mode}: {', '.join(d.per_trial)}" for d in differences)
    return "\n\n".join(
        [
            md_table(header, body),
            caption(
                f"Paired differences on {dataset.label} (row − reference, percentage points): mean ± 95% CI of the "
                "per-trial differences (Student t, pairs − 1 df), each trial's difficulty cancelling",
                f"reference: {differences[0].reference.label}",
                dataset_text(dataset, dataset.main_set.label, f"trials: those both rows have ({matched})", report),
                checkpoints_text(report.checkpoints),
            ),
        ]
    )


def rate_table(report: Report, dataset: DatasetSummary) -> str:
    """The headline metric (Rank-1) by query set (HR, each seen rate alone, mixed, unseen) for one dataset."""
    rows, headline = _row_keys(report), spec(HEADLINE)
    header = [*ROW_HEADER, *(s.label for s in dataset.sets)]
    cells = _label_columns(rows) + [_column(report, dataset, s.key, (headline,), rows) for s in dataset.sets]
    return "\n\n".join(
        [
            md_table(header, list(zip(*cells, strict=True))),
            caption(
                f"{headline.title} (%) by query set on {dataset.label}",
                dataset_text(dataset, "as in each column", trials_text(report, dataset), report),
                "LR r (of mixed) is the subset of the mixed queries at rate r (averaged over the trials that drew "
                "r); HR replaces each query of the main set by its HR original",
                checkpoints_text(report.checkpoints),
            ),
        ]
    )


def _recovery_cells(scores: dict[str, Any] | None) -> list[str]:
    """One method's cells of one query set, a cell per recovery metric of the table ("n/a" where absent)."""
    if scores is None:
        return ["n/a"] * len(RECOVERY_SPECS)
    return ["n/a" if scores[s.name] is None else s.text(scores[s.name]) for s in RECOVERY_SPECS]


def recovery_table(report: Report, dataset: DatasetSummary) -> str | None:
    """SSIM / PSNR / LPIPS of G's output (and of bilinear up-sampling) vs the HR originals, per LR query set, each
    over the queries of the trials its checkpoint was evaluated on."""
    entries = [e for e in report.recovery if e.dataset == dataset.label]
    sets = {name: s["label"] for e in entries for name, s in e.payload["sets"].items()}
    if not entries:
        return None
    if not sets:
        return caption(f"HR recovery on {dataset.label}: n/a, its queries have no HR originals (native LR)")
    header = ["method"] + [f"{label} {s.heading}" for label in sets.values() for s in RECOVERY_SPECS]
    rows, reasons = [], set()
    for entry in entries:
        label = report.recovery_label(entry.checkpoint)
        if not entry.checkpoint.can_recover:
            rows.append([f"{label} (no G: does not recover images)"] + ["n/a"] * (len(header) - 1))
            continue
        cells = [c for name in sets for c in _recovery_cells(entry.payload["sets"].get(name, {}).get("model"))]
        rows.append([label, *cells])
    references: dict[tuple[tuple[int, int], tuple[int, ...]], list[str]] = {}
    for entry in entries:
        cells = [c for name in sets for c in _recovery_cells(entry.payload["sets"].get(name, {}).get("bilinear"))]
        references.setdefault((entry.checkpoint.input_size, entry.trials), cells)
    sizes = list(dict.fromkeys(size for size, _ in references))
    trial_sets = list(dict.fromkeys(trials for _, trials in references))
    for (size, trials), cells in references.items():
        suffix = f" at {size[0]}×{size[1]}" if len(sizes) > 1 else ""
        suffix += f", trial(s) {trial_list(list(trials))}" if len(trial_sets) > 1 else ""
        rows.append([METHOD_BILINEAR + suffix, *cells])
    for entry in entries:
        for scores in entry.payload["sets"].values():
            reasons |= {
                s["lpips_reason"] for key in ("model", "bilinear") if (s := scores.get(key)) and s["lpips_reason"]
            }
    counts = ", ".join(
        f"{label}: {'/'.join(str(n) for n in dict.fromkeys(e.payload['sets'][name]['count'] for e in entries))} images"
        for name, label in sets.items()
    )
    pooled = (
        f"trials: the queries of trial(s) {trial_list(list(trial_sets[0]))} of {dataset.trials_total} pooled"
        if len(trial_sets) == 1
        else "trials: the queries of the trials each checkpoint was evaluated on, pooled (its own split where it "
        "trained on this dataset)"
    )
    notes = [
        f"HR recovery on {dataset.label}",
        dataset_text(dataset, "; ".join(sets.values()), pooled),
        f"every distinct LR query ({counts}) vs its HR original at model input size "
        f"{', '.join(f'{h}×{w}' for h, w in sizes)}, pixels in [0, 1]",
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


#: What the scorings of the rows are, for the report's note.
SCORING_NOTE = (
    "Rows whose mode names a scoring rank the same embeddings differently: re-ranked (k1 / k2 / λ) is the "
    "k-reciprocal re-ranking of Zhong et al. (CVPR 2017), queries and gallery in one neighbourhood graph as in "
    "the published evaluation, its final distances fed to the same CMC / mAP / mINP code; AQE K replaces each "
    "query by the normalised mean of itself and its K nearest gallery items (average query expansion)."
)
#: The open-set table's footnote: the definition, and which score ``--min-score`` compares.
OPEN_SET_NOTE = (
    "FMR: share of queries whose best score passes the threshold once their identity is removed from the gallery "
    "(re-ranked and AQE scores are computed again without it); TMR: share of queries with a "
    "true match whose best-scoring entry is of their identity and passes it; `search --min-score` applies to plain "
    "inner products (a similarity, passes when ≥); re-ranked scores are distances (pass when ≤)"
)


def open_set_table(report: Report, dataset: DatasetSummary) -> str | None:
    """Per row, mode, scores and target false-match rate: the threshold there, the FMR it achieves, the TMR,
    Rank-1 and the trial counts, on the dataset's main query set; None when not asked for."""
    records = report.open_set_rows(dataset.label)
    if not records:
        return None
    header = [*ROW_HEADER, "scores", "target FMR", "threshold", "achieved FMR", "TMR", "Rank-1", "genuine", "impostor"]
    body = [
        [
            r["label"],
            r["mode"],
            f"{r['scores']} ({r['kind']}, passes when {'≥' if r['kind'] == 'similarity' else '≤'})",
            percent(r["target_fmr"]),
            f"{r['threshold']:.4f}",
            percent(r["fmr"]),
            percent(r["tmr"]),
            percent(r["rank1"]),
            str(r["num_genuine"]),
            str(r["num_impostor"]),
        ]
        for r in records
    ]
    pooled = "; ".join(dict.fromkeys(f"{r['label']}: {r['units']}" for r in records))
    return "\n\n".join(
        [
            md_table(header, body),
            caption(
                f"Open set (query not in gallery) on {dataset.label}, FMR / TMR / Rank-1 in %, threshold in the "
                "scores' units; means over the evaluated trials, trial counts summed",
                dataset_text(dataset, dataset.main_set.label, f"trials: {pooled}", report),
                OPEN_SET_NOTE,
            ),
        ]
    )


def render_markdown(report: Report, plots: Sequence[tuple[str, str]] = (), published: bool = False) -> str:
    """The whole report; ``plots`` are (title, relative link) pairs."""
    scored = any(e.scoring != PLAIN_LABEL for e in report.ranking)
    parts = ["# reidx report", AP_NOTE + (" " + SCORING_NOTE if scored else ""), checkpoint_list(report.checkpoints)]
    if report.notes:
        parts.append("\n".join(f"- {note}" for note in report.notes))
    parts += ["## Cross-resolution re-ID", main_table(report)]
    for dataset in report.datasets:
        table = difference_table(report, dataset)
        if table:
            parts += [f"## Paired differences: {dataset.label}", table]
    for dataset in report.datasets:
        if len(dataset.sets) > 1:  # one query set (genuine LR queries): the main table says it all
            parts += [f"## Rank-1 by query rate: {dataset.label}", rate_table(report, dataset)]
    for dataset in report.datasets:
        table = open_set_table(report, dataset)
        if table:
            parts += [f"## Open set: {dataset.label}", table]
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
