"""The metric table of record: every ranking and recovery metric reidx reports, one row each.

The report's markdown tables, its CSV and JSON, ``recover``'s printer and the training epoch line iterate these
rows; nothing else names a metric. A new ranking metric is its rule in :mod:`reidx.metrics.reference`, its
per-query values in :mod:`reidx.metrics._rank_kernel` (named in ``PER_QUERY``) and one row here; a new recovery
metric is its scorer in :mod:`reidx.metrics.recovery` and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

RANKING, RECOVERY = "ranking", "recovery"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how records key it, how tables head it and how its values are written.

    A ranking metric is either a rank of the CMC (``cmc_rank``) or the mean over valid queries of a per-query
    value the kernel returns under ``name``. ``column``: ranking metrics sharing one markdown column (joined by
    " / "); ``shown`` False keeps a metric to CSV and JSON; ``validation`` puts it in the training epoch line.
    """

    name: str  # the record key: "rank1", "mAP", "ssim"
    label: str  # as a table heads it: "R1", "mAP", "SSIM"
    kind: str  # RANKING or RECOVERY
    title: str = ""  # in words, as the training log names it ("" = the label)
    fmt: str = "percent"  # "percent" (a fraction shown in %) or a format spec such as ".3f"
    unit: str = ""  # "dB"
    higher_is_better: bool = True
    cmc_rank: int | None = None
    column: str | None = None
    shown: bool = True
    validation: bool = False
    single_shot_label: str | None = None  # the label under the single-shot protocol, where it differs
    note: str = ""  # its definition, for the report's opening note

    def label_for(self, protocol: str) -> str:
        """The table label under ``protocol``."""
        return self.single_shot_label if protocol == "single-shot" and self.single_shot_label else self.label

    @property
    def heading(self) -> str:
        """Label, unit and which way is better: "PSNR dB ↑", "LPIPS ↓"."""
        return " ".join([self.label, *([self.unit] if self.unit else []), "↑" if self.higher_is_better else "↓"])

    def text(self, value: float) -> str:
        """A value as tables write it (a percentage without its sign)."""
        return percent(value) if self.fmt == "percent" else f"{value:{self.fmt}}"

    def with_unit(self, value: float) -> str:
        """A value with its unit: "83.7%", "24.51 dB"."""
        if self.fmt == "percent":
            return f"{self.text(value)}%"
        return self.text(value) + (f" {self.unit}" if self.unit else "")


#: Every metric, in the order tables, records and logs show them.
METRICS = (
    MetricSpec("rank1", "R1", RANKING, title="Rank-1", cmc_rank=1, column="cmc", validation=True),
    MetricSpec("rank5", "R5", RANKING, title="Rank-5", cmc_rank=5, column="cmc"),
    MetricSpec("rank10", "R10", RANKING, title="Rank-10", cmc_rank=10, column="cmc"),
    MetricSpec("rank20", "R20", RANKING, title="Rank-20", cmc_rank=20, shown=False),
    MetricSpec(
        "mAP",
        "mAP",
        RANKING,
        validation=True,
        single_shot_label="mAP (single-shot, = mean reciprocal rank)",
        note="mAP is the torchreid / open-reid AP: the mean of the precision at each true match's rank (not the "
        "Market-1501 trapezoid rule); on single-shot datasets, with one true match per gallery, it equals the mean "
        "reciprocal rank and is labelled so.",
    ),
    MetricSpec(
        "mINP",
        "mINP",
        RANKING,
        validation=True,
        single_shot_label="mINP (single-shot, = mean reciprocal rank)",
        note="mINP (Ye et al., TPAMI 2021) is the mean inverse negative penalty: per query, the number of true "
        "matches over the rank of the last (hardest) one; single-shot, with one true match, it equals the mean "
        "reciprocal rank too.",
    ),
    MetricSpec("ssim", "SSIM", RECOVERY, fmt=".3f"),
    MetricSpec("psnr", "PSNR", RECOVERY, fmt=".2f", unit="dB", validation=True),
    MetricSpec("lpips", "LPIPS", RECOVERY, fmt=".3f", higher_is_better=False),
)
RANKING_SPECS = tuple(spec for spec in METRICS if spec.kind == RANKING)
RECOVERY_SPECS = tuple(spec for spec in METRICS if spec.kind == RECOVERY)
#: The ranking metrics every result record holds, and the per-image recovery scores.
RANKING_METRICS = tuple(spec.name for spec in RANKING_SPECS)
RECOVERY_METRICS = tuple(spec.name for spec in RECOVERY_SPECS)
#: The metric a one-number summary uses (the Rank-1 table and plot, the best epoch).
HEADLINE = "rank1"
#: The ranking metrics of the markdown tables (and of the paired differences).
SHOWN_RANKING = tuple(spec for spec in RANKING_SPECS if spec.shown)
#: The CMC length a record keeps: the deepest rank the table names.
CMC_LENGTH = max(spec.cmc_rank or 0 for spec in RANKING_SPECS)


def spec(name: str) -> MetricSpec:
    """The row of metric ``name``."""
    return next(row for row in METRICS if row.name == name)


def columns(specs: tuple[MetricSpec, ...] = SHOWN_RANKING) -> list[tuple[MetricSpec, ...]]:
    """``specs`` grouped into markdown columns: those sharing a ``column`` together, in table order."""
    grouped: dict[str, list[MetricSpec]] = {}
    for row in specs:
        grouped.setdefault(row.column or row.name, []).append(row)
    return [tuple(group) for group in grouped.values()]


def percent(value: float, spread: float | None = None, bold: bool = False) -> str:
    """A fraction as the report and the training log show it: ``83.7`` or ``83.7 ± 1.2`` (a spread when given),
    bold (markdown) on request."""
    text = f"{100 * value:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")
    return f"**{text}**" if bold else text
