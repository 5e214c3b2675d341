"""How a report row's numbers are made: its per-trial units (one per test trial, or one per checkpoint when each
checkpoint is tested on several trials), what they are called in a caption, and the paired per-trial
differences between rows (matched by trial, Student t intervals from :mod:`reidx.metrics.stats`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from reidx.metrics import EvalResult, aggregate_trials
from reidx.metrics.stats import paired_ci
from reidx.metrics.table import SHOWN_RANKING
from reidx.report.groups import RunGroup, split_text

if TYPE_CHECKING:
    from reidx.report.runner import RankingEntry

#: The metrics of the paired-difference tables: those the markdown tables show.
DIFFERENCE_METRICS = tuple(spec.name for spec in SHOWN_RANKING)


@dataclass(frozen=True)
class Difference:
    """The paired per-trial difference ``group − reference`` on one dataset's main query set in one mode."""

    group: RunGroup
    reference: RunGroup
    dataset: str
    mode: str
    per_trial: dict[str, dict[str, float]]  # unit key -> metric -> difference (fractions)
    mean: dict[str, float]
    ci95: dict[str, float | None]


def trial_list(trials: list[int]) -> str:
    """``0-4`` for a run of trials, else ``0, 2, 5``."""
    if len(trials) > 2 and trials == list(range(trials[0], trials[-1] + 1)):
        return f"{trials[0]}-{trials[-1]}"
    return ", ".join(map(str, trials))


@dataclass(frozen=True)
class Pooling:
    """How a group's results on one dataset become units: ``kind`` "test" (a unit per test trial: one checkpoint
    on several trials, or one checkpoint per trial) or "split" (a unit per checkpoint, the mean of its test
    trials), and the words for it."""

    kind: str
    noun: str
    detail: str

    def text(self, units: dict[str, EvalResult], total: int) -> str:
        """What a row's number is: "mean ± 95% CI over 5 trials (0-4), one checkpoint per trial, ... (Student
        t, 4 df)", or "trial 3 of 10"."""
        keys = [key.split(" ", 1)[1] for key in units]
        if len(keys) == 1:
            return (
                f"trial {keys[0]} of {total}" if self.kind == "test" else f"one checkpoint (training split {keys[0]})"
            )
        listed = trial_list([int(k) for k in keys]) if all(k.isdigit() for k in keys) else ", ".join(keys)
        prefix = "training splits " if self.kind == "split" else ""
        n = len(keys)
        return f"mean ± 95% CI over {n} {self.noun} ({prefix}{listed}){self.detail} (Student t, {n - 1} df)"


def pooling(group: RunGroup, directory: Path, trials: dict[str, list[int]]) -> Pooling:
    """The group's pooling on the dataset at ``directory``, where checkpoint ``path`` is evaluated on
    ``trials[path]``."""
    members = group.checkpoints
    if len(members) == 1:
        return Pooling("test", "test trials", " of one checkpoint")
    lists = [trials[c.path] for c in members]
    flat = [t for each in lists for t in each]
    if all(len(each) == 1 for each in lists) and len(set(flat)) == len(flat):
        where = str(directory.resolve())
        own = all(
            any(s.path == where and s.trial == each[0] for s in c.sources)
            for c, each in zip(members, lists, strict=True)
        )
        return Pooling("test", "trials", ", one checkpoint per trial" + (" tested on its own split" if own else ""))
    return Pooling("split", "checkpoints", ", each the mean of its test trials")


def pool_units(group: RunGroup, kind: str, results: dict[str, dict[int, EvalResult]]) -> dict[str, EvalResult]:
    """The group's per-unit records of one query set; ``results``: checkpoint path -> trial -> record."""
    units: dict[str, EvalResult] = {}
    for checkpoint in group.checkpoints:
        records = results.get(checkpoint.path, {})
        if kind == "test":
            units |= {f"trial {t}": record for t, record in sorted(records.items())}
        elif records:
            mean = aggregate_trials(list(records.values()))  # one value per checkpoint
            units[f"split {split_text(checkpoint)}"] = replace(mean, trials=1, std={}, ci95={})
    return units


def paired_differences(groups: list[RunGroup], datasets: list[list[RankingEntry]]) -> list[Difference]:
    """Every group but the first against the first, per dataset (the entries of its main query set) and shared
    mode, matched by trial (or training split)."""
    if len(groups) < 2:
        return []
    reference, differences = groups[0], []
    for entries in datasets:
        base = {e.mode: e for e in entries if e.group is reference}
        for entry in entries:
            if entry.group is reference or entry.mode not in base:
                continue
            other = base[entry.mode]
            mean, ci95, per_trial = {}, {}, {}
            for name in DIFFERENCE_METRICS:
                a = {key: r.metrics[name] for key, r in entry.units.items()}
                b = {key: r.metrics[name] for key, r in other.units.items()}
                keys, mean[name], ci95[name] = paired_ci(a, b)
                for key in keys:
                    per_trial.setdefault(key, {})[name] = a[key] - b[key]
            if per_trial:
                differences.append(Difference(entry.group, reference, entry.dataset, entry.mode, per_trial, mean, ci95))
    return differences
