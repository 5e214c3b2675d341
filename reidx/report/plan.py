"""The plan of a report's evaluation: a prepared dataset opened for it, and which images form each trial's query
sets and gallery (protocols.md §2), the recovery pairs, and the evenly spread picks of examples and samples.

Query sets of a trial: "HR" (the queries of the main set replaced by their HR ``source``), each seen rate alone
(the subset of the mixed queries at that rate), the main set ("mixed"), and every other set the manifest has
(unseen rates such as ``r8``; CAVIAR's ``native``). A :class:`QuerySet` without rows names a set in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reidx.data.manifest import MANIFEST_NAME, DatasetInfo, check_testable, read_dataset
from reidx.errors import ReidxError
from reidx.io import sha256_file
from reidx.report.cache import dataset_fingerprint

MAIN_SET = "mixed"
HR_SET = "hr"
NATIVE_SET = "native"


@dataclass
class EvalDataset:
    """A prepared dataset opened for evaluation."""

    directory: Path
    frame: pd.DataFrame
    info: DatasetInfo
    fingerprint: str
    label: str
    manifest_sha256: str = ""

    @property
    def trials(self) -> list[int]:
        """The trial numbers that have queries."""
        return sorted(int(t) for t in self.frame.loc[self.frame["split"] == "query", "trial"].unique())


def open_dataset(directory: Path) -> EvalDataset:
    """Read a dataset directory; a missing one, a training-only one or one without query and gallery rows is a
    ReidxError."""
    if not directory.is_dir():
        raise ReidxError(f"dataset not found: {directory}", "pass a directory written by `reidx prepare --out DIR`")
    frame, info = read_dataset(directory)
    check_testable(directory, info)
    missing = [split for split in ("query", "gallery") if not (frame["split"] == split).any()]
    if missing:
        raise ReidxError(
            f"{directory} has no test split ({' and '.join(missing)} images missing)",
            "prepare a dataset with query and gallery images (`reidx prepare`) to evaluate on it",
        )
    fingerprint = dataset_fingerprint(directory, frame)
    return EvalDataset(directory, frame, info, fingerprint, info.dataset, sha256_file(directory / MANIFEST_NAME))


@dataclass(frozen=True, eq=False)
class QuerySet:
    """One set of queries: of one trial with its ``rows``, or (``rows`` None) as the tables name it; ``rate`` is
    its single down-sampling rate (1 for HR), else None."""

    key: str
    label: str
    rates: tuple[int, ...]
    rate: int | None
    main: bool = False
    rows: pd.DataFrame | None = None


def set_label(name: str, rates: tuple[int, ...], info: DatasetInfo) -> str:
    """A query set in words: "HR", "LR {2,3,4} mixed", "LR 8 unseen", "LR native"."""
    if name == HR_SET:
        return "HR"
    if name == NATIVE_SET:
        return "LR native"
    if name == MAIN_SET:  # named by the rate set its queries are drawn from, whichever were drawn
        return f"LR {{{','.join(map(str, info.rates))}}} mixed"
    listed = ",".join(map(str, rates))
    return f"LR {listed} unseen" if set(rates) <= set(info.unseen_rates) else f"LR {listed}"


def main_set_name(names: list[str]) -> str:
    """The set the main table reports: "mixed" where present, else the first."""
    return MAIN_SET if MAIN_SET in names else names[0]


def query_sets(dataset: EvalDataset, trial: int) -> list[QuerySet]:
    """The query sets of ``trial``, in column order: HR, each seen rate alone, mixed, the others."""
    frame = dataset.frame
    queries = frame[(frame["split"] == "query") & (frame["trial"] == trial)]
    names = sorted(queries["query_set"].unique(), key=lambda name: (name != MAIN_SET, name))
    main_name = main_set_name(names)
    main = queries[queries["query_set"] == main_name]
    sets: list[QuerySet] = []
    if (main["source"] != main["path"]).any():
        hr = main.drop_duplicates("source").assign(path=lambda rows: rows["source"])
        sets.append(QuerySet(HR_SET, "HR", (1,), 1, rows=hr))
    for name in names:
        rows = queries[queries["query_set"] == name]
        drawn = tuple(sorted(int(r) for r in rows["rate"].unique()))
        rates = tuple(dataset.info.rates) if name == MAIN_SET else drawn
        label = set_label(name, drawn, dataset.info)
        if len(rates) > 1:
            for rate in drawn:
                subset = rows[rows["rate"] == rate]
                sets.append(QuerySet(f"{name}@{rate}", f"LR {rate} (of {name})", (rate,), rate, rows=subset))
        single = rates[0] if len(rates) == 1 and rates[0] > 1 else None
        sets.append(QuerySet(name, label, rates, single, main=name == main_name, rows=rows))
    return sets


def gallery_rows(dataset: EvalDataset, trial: int) -> pd.DataFrame:
    """The gallery of ``trial``."""
    frame = dataset.frame
    return frame[(frame["split"] == "gallery") & (frame["trial"] == trial)]


def trial_seed(info: DatasetInfo, trial: int) -> int:
    """The single-shot gallery-draw seed of a trial: the dataset's seed plus the trial number."""
    return info.seed + trial


def evenly_spread(count: int, total: int) -> np.ndarray:
    """Up to ``count`` distinct indices of ``range(total)``, evenly spread from the first to the last."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def recovery_pairs(dataset: EvalDataset, trials: list[int]) -> dict[str, pd.DataFrame]:
    """Per LR query set with an HR original: its distinct (LR path, HR source) pairs over ``trials``."""
    frame = dataset.frame
    queries = frame[(frame["split"] == "query") & (frame["path"] != frame["source"]) & frame["trial"].isin(trials)]
    return {
        name: rows.drop_duplicates(["path", "source"])[["path", "source", "rate"]].reset_index(drop=True)
        for name, rows in queries.groupby("query_set", sort=True)
    }
