"""Run the evaluations a report needs: every (checkpoint, dataset, mode) not yet cached, with a progress bar.

The result is a :class:`Report`: per row (a :class:`~reidx.report.groups.RunGroup`: one checkpoint, or one
checkpoint per split of one recipe), dataset, mode and query set, the per-trial
:class:`~reidx.metrics.EvalResult` records and their mean ± 95% CI; the paired per-trial differences of every
row against the first; recovery scores, and what the plots need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reidx.checkpoint import CheckpointFile, LoadedModel
from reidx.console import progress, sub_task
from reidx.errors import ReidxError
from reidx.metrics import EvalResult, aggregate_trials
from reidx.models import list_models, model_class
from reidx.models.loading import load_model, open_model_checkpoint
from reidx.report.aggregate import Difference, paired_differences, pool_units, pooling
from reidx.report.cache import MODEL_ENTRY, RECOVERY_ENTRY, ResultCache, open_set_entry, ranking_entry
from reidx.report.evaluation import (
    CheckpointInfo,
    Embedded,
    describe_checkpoint,
    embed_trials,
    open_set_trials,
    rank_trials,
    recover_dataset,
)
from reidx.report.groups import RunGroup, group_checkpoints, split_text
from reidx.report.plan import EvalDataset, QuerySet, open_dataset, query_sets
from reidx.report.scoring import PLAIN, PLAIN_LABEL, Scoring
from reidx.report.sources import allowed_trials

ALL_MODES = tuple(dict.fromkeys(mode for name in list_models() for mode in model_class(name).embedding_modes))


def parse_modes(text: str | None) -> list[str] | None:
    """``"fused,f,g"`` as a list (None = every mode each model has); an unknown mode is a ReidxError."""
    if text is None:
        return None
    modes = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [mode for mode in modes if mode not in ALL_MODES]
    if unknown or not modes:
        raise ReidxError(f"--modes {text!r}: unknown mode(s) {unknown}", f"use a comma list of {', '.join(ALL_MODES)}")
    return modes


def parse_trial(text: str) -> int | None:
    """``"all"`` (None) or a trial number."""
    if text == "all":
        return None
    if not text.isdigit():
        raise ReidxError(f"--trial {text!r} is neither 'all' nor a trial number", "use --trial all or e.g. --trial 0")
    return int(text)


@dataclass
class DatasetSummary:
    """A dataset as the tables name it."""

    label: str
    directory: Path
    name: str
    protocol: str
    rates: list[int]
    unseen_rates: list[int]
    trials_total: int
    trials: list[int]
    sets: list[QuerySet]  # without rows

    @property
    def main_set(self) -> QuerySet:
        return next(s for s in self.sets if s.main)


@dataclass(frozen=True)
class RankingEntry:
    """One row's results on one dataset, mode and query set: ``units`` (per trial, or per training split,
    keyed "trial T" / "split T") and ``result``, their mean with its spread; ``pooling`` says in words what was
    averaged."""

    group: RunGroup
    dataset: str
    mode: str
    set_key: str
    rate: int | None
    result: EvalResult
    units: dict[str, EvalResult]
    pooling: str
    scoring: str = PLAIN_LABEL  # how pairs were scored: "plain", "re-ranked k1 20 / k2 6 / λ 0.3", "AQE 3"


@dataclass(frozen=True)
class OpenSetEntry:
    """Open-set operating points of one checkpoint, dataset, row mode and scoring, per evaluated trial
    (``OpenSetResult.to_dict()`` records on the main query set)."""

    checkpoint: CheckpointInfo
    dataset: str
    mode: str  # the embedding mode
    scoring: str  # "plain", "re-ranked k1 20 / k2 6 / λ 0.3", "AQE 3"
    per_trial: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RecoveryEntry:
    """Recovery scores of one checkpoint on one dataset, over ``trials`` (``model`` scores absent for a
    non-recovering model)."""

    checkpoint: CheckpointInfo
    dataset: str
    payload: dict[str, Any]
    trials: tuple[int, ...] = ()


@dataclass
class Report:
    """Everything the tables and plots show."""

    checkpoints: list[CheckpointInfo]
    datasets: list[DatasetSummary]
    groups: list[RunGroup] = field(default_factory=list)
    ranking: list[RankingEntry] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    recovery: list[RecoveryEntry] = field(default_factory=list)
    open_set: list[OpenSetEntry] = field(default_factory=list)
    #: row mode cell -> its scoring's label ("fused, AQE 3" -> "AQE 3")
    scorings: dict[str, str] = field(default_factory=dict)
    #: (checkpoint path, dataset, mode) -> a few ranked queries, as ``QueryResult.to_dict()`` records
    examples: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    evaluated: int = 0
    cached: int = 0
    seconds: float = 0.0

    def entries(self, dataset: str, set_key: str | None = None) -> list[RankingEntry]:
        """Ranking entries of ``dataset`` (one query set, or the main one), in row and mode order."""
        summary = next(d for d in self.datasets if d.label == dataset)
        key = set_key or summary.main_set.key
        return [e for e in self.ranking if e.dataset == dataset and e.set_key == key]

    def group_of(self, checkpoint: CheckpointInfo) -> RunGroup:
        return next(g for g in self.groups if checkpoint in g.checkpoints)

    def recovery_label(self, checkpoint: CheckpointInfo) -> str:
        """A recovery row's label: its row's, with the checkpoint and its split where the row pools several."""
        group = self.group_of(checkpoint)
        if len(group.checkpoints) == 1:
            return group.label
        return f"{group.label} · {checkpoint.name}, split {split_text(checkpoint)}"

    def open_set_rows(self, dataset: str) -> list[dict[str, Any]]:
        """The open-set table of ``dataset``: per row (group), mode and target FMR, the threshold, achieved FMR,
        TMR and Rank-1 as means over the row's evaluated trials (fractions; the threshold in the scores' own
        units), and the genuine and impostor trials summed over them."""
        records = []
        for group in self.groups:
            entries = [e for e in self.open_set if e.dataset == dataset and e.checkpoint in group.checkpoints]
            for mode, scores in dict.fromkeys((e.mode, e.scoring) for e in entries):
                units = [
                    (key, unit)
                    for e in entries
                    if (e.mode, e.scoring) == (mode, scores)
                    for key, unit in e.per_trial.items()
                ]
                first = units[0][1]
                for i, point in enumerate(first["points"]):
                    records.append(
                        {
                            "dataset": dataset,
                            "label": group.label,
                            "mode": mode,
                            "scores": scores,
                            "kind": first["kind"],
                            "passes": first["passes"],
                            "target_fmr": point["target_fmr"],
                            **{
                                name: float(np.mean([u["points"][i][name] for _, u in units]))
                                for name in ("threshold", "fmr", "tmr")
                            },
                            "rank1": float(np.mean([u["rank1"] for _, u in units])),
                            "num_genuine": sum(u["num_genuine"] for _, u in units),
                            "num_impostor": sum(u["num_impostor"] for _, u in units),
                            "units": " ".join(f"trial{key}" for key, _ in units),
                        }
                    )
        return records

    def summary_line(self) -> str:
        return f"evaluated {self.evaluated}, cached {self.cached} ({self.seconds:.2f} s)"


def checkpoint_info(checkpoint: CheckpointFile, cache: ResultCache) -> CheckpointInfo:
    """The checkpoint's description, from the cache when its bytes are unchanged."""
    cached = cache.load(MODEL_ENTRY)
    if cached is not None:
        try:
            return replace(CheckpointInfo.from_dict(cached), path=str(checkpoint.path.resolve()))
        except (TypeError, KeyError, ValueError):  # written by an older reidx: describe it again
            pass
    info = describe_checkpoint(checkpoint)
    cache.save(MODEL_ENTRY, info.to_dict())
    return info


def select_trials(dataset: EvalDataset, trial: int | None) -> list[int]:
    """Every trial, or the one asked for (which must exist)."""
    if trial is None:
        return dataset.trials
    if trial not in dataset.trials:
        raise ReidxError(f"{dataset.directory} has no trial {trial}", f"use --trial all or one of {dataset.trials}")
    return [trial]


def _column_order(query_set: QuerySet) -> tuple[int, int, str]:
    group = 0 if query_set.rate == 1 else 1 if "@" in query_set.key else 2 if query_set.main else 3
    return group, query_set.rate or 0, query_set.key


def summarise_dataset(dataset: EvalDataset, label: str, trials: list[int]) -> DatasetSummary:
    """The dataset's description and its query sets over ``trials``, in column order."""
    info = dataset.info
    found = {s.key: replace(s, rows=None) for trial in trials for s in query_sets(dataset, trial)}
    sets = sorted(found.values(), key=_column_order)
    return DatasetSummary(
        label,
        dataset.directory,
        info.dataset,
        info.protocol,
        list(info.rates),
        list(info.unseen_rates),
        info.trials,
        trials,
        sets,
    )


def unique_labels(names: list[str], directories: list[Path]) -> list[str]:
    """Dataset names, with the directory name added where two datasets share a name."""
    pairs = zip(names, directories, strict=True)
    return [f"{name} ({directory.name})" if names.count(name) > 1 else name for name, directory in pairs]


@dataclass
class _Job:
    checkpoint: CheckpointInfo
    cache: ResultCache
    dataset: EvalDataset
    summary: DatasetSummary
    mode: str | None  # the embedding mode ranked; None: the recovery job
    trials: list[int]  # the test trials the checkpoint may be evaluated on
    scoring: Scoring = PLAIN
    open_set: bool = False  # the open-set operating points, not the ranking metrics

    @property
    def entry(self) -> str:
        """The job's cache entry."""
        if self.mode is None:
            return RECOVERY_ENTRY
        return (open_set_entry if self.open_set else ranking_entry)(self.mode, self.scoring.key)


def expand_checkpoints(paths: list[Path]) -> list[Path]:
    """Checkpoint files as given (a missing one is refused when it is opened); a folder stands for every run
    below it (a folder holding ``last.pt``), each by its ``best.pt`` (``last.pt`` where it has none), in path
    order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        runs = sorted({last.parent for last in path.rglob("last.pt")} | {best.parent for best in path.rglob("best.pt")})
        if not runs:
            raise ReidxError(f"{path} holds no run (no last.pt or best.pt below it)", "pass a run folder or a .pt file")
        found += [run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt" for run in runs]
    return list(dict.fromkeys(found))


def collect(
    checkpoints: list[Path],
    datasets: list[Path],
    *,
    modes: list[str] | None = None,
    trial: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 2,
    scorings: list[Scoring] | None = None,
    open_set: bool = False,
) -> Report:
    """Evaluate what is not cached yet and gather every result the report shows: the ranking metrics under each
    of ``scorings`` (default: plain only) and, with ``open_set``, the open-set operating points of each."""
    started = time.perf_counter()
    checkpoints = expand_checkpoints(checkpoints)
    opened = [open_dataset(path) for path in datasets]
    labels = unique_labels([d.info.dataset for d in opened], [d.directory for d in opened])
    summaries = []
    for dataset, label in zip(opened, labels, strict=True):
        dataset.label = label
        summaries.append(summarise_dataset(dataset, label, select_trials(dataset, trial)))
    report = Report([], summaries)
    jobs: list[_Job] = []
    usable_modes = False
    files: dict[str, CheckpointFile] = {}
    sources_read: dict = {}  # each training source's dataset, read once
    for path in checkpoints:
        checkpoint = open_model_checkpoint(path)  # read and hashed once, its state reused to build the model
        cache = ResultCache(path, checkpoint.fingerprint)
        info = checkpoint_info(checkpoint, cache)
        files[info.path] = checkpoint
        report.checkpoints.append(info)
        wanted = list(info.modes) if modes is None else modes
        missing = [mode for mode in wanted if mode not in info.modes]
        if missing:
            report.notes.append(f"{info.label} has no {', '.join(missing)} embedding: skipped")
        usable_modes = usable_modes or len(missing) < len(wanted)
        for dataset, summary in zip(opened, summaries, strict=True):
            trials, reason = allowed_trials(info, dataset, summary.trials, sources_read)
            if not trials:
                raise ReidxError(
                    f"{info.label} cannot be tested on {summary.label} at {dataset.directory}: {reason}",
                    "test it on a dataset it did not train on, or on its own split (--trial)",
                )
            if trials != summary.trials:
                report.notes.append(f"{info.label} evaluated on trial(s) {trials} of {summary.label} only: {reason}")
            for mode in [mode for mode in wanted if mode in info.modes]:
                for scoring in scorings or [PLAIN]:
                    jobs.append(_Job(info, cache, dataset, summary, mode, trials, scoring))
                    if open_set:
                        jobs.append(_Job(info, cache, dataset, summary, mode, trials, scoring, open_set=True))
            jobs.append(_Job(info, cache, dataset, summary, None, trials))
    if not usable_modes:
        raise ReidxError(
            f"none of the checkpoints has the embedding mode(s) {', '.join(modes or [])}",
            "use --modes fused (every model has it) or leave --modes out",
        )
    report.groups = group_checkpoints(
        report.checkpoints, [(d.info.dataset, str(d.directory.resolve())) for d in opened]
    )
    per_trial = _run_jobs(jobs, files, report, device, batch_size, workers)
    assemble(report, per_trial, {(job.checkpoint.path, job.summary.label): job.trials for job in jobs})
    report.seconds = time.perf_counter() - started
    return report


def _run_jobs(
    jobs: list[_Job],
    files: dict[str, CheckpointFile],
    report: Report,
    device: torch.device | str,
    batch_size: int,
    workers: int,
) -> dict[tuple[str, str, str], dict[int, dict[str, Any]]]:
    """Run (or read from the cache) every job; return each ranking job's payload per trial, keyed by
    (checkpoint path, dataset label, row mode)."""
    loaded: dict[str, LoadedModel] = {}
    embedded: dict[tuple[str, str, str], Embedded] = {}
    per_trial: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}

    def model(job: _Job) -> LoadedModel:
        """The job's network, loaded once while its checkpoint's jobs run."""
        if job.checkpoint.path not in loaded:
            loaded.clear()
            loaded[job.checkpoint.path] = load_model(files[job.checkpoint.path], device)
        return loaded[job.checkpoint.path]

    def vectors(job: _Job) -> Embedded:
        """The job's embeddings, computed once for every scoring of its checkpoint, dataset and mode."""
        key = (job.checkpoint.path, job.summary.label, str(job.mode))
        if key not in embedded:
            embedded.clear()
            embedded[key] = embed_trials(
                model(job), job.dataset, str(job.mode), job.trials, batch_size=batch_size, workers=workers
            )
        return embedded[key]

    with progress() as bar:
        task = bar.add_task("evaluating", total=len(jobs))
        for job in jobs:
            kind = "recovery" if job.mode is None else job.scoring.row_mode(job.mode)
            what = f"{Path(job.checkpoint.path).parent.name} · {job.summary.label} · {kind}"
            what += " · open set" if job.open_set else ""
            bar.update(task, description=what)
            cached = job.cache.load(job.entry, job.dataset)
            identities = sub_task(bar, "  re-ranked without each query identity")
            evaluated = _evaluate(job, cached, model, vectors, batch_size, workers, identities)
            if evaluated is None:
                payload = cached
                report.cached += 1
                bar.update(task, description=f"{what} (cached)")
            else:
                payload = job.cache.save(job.entry, evaluated[0], job.dataset, evaluated[1])
                report.evaluated += 1
            label = job.summary.label
            if job.mode is None:
                report.recovery.append(RecoveryEntry(job.checkpoint, label, payload, tuple(job.trials)))
            elif job.open_set:
                points = {str(t): payload[str(t)] for t in job.trials}
                report.open_set.append(OpenSetEntry(job.checkpoint, label, job.mode, job.scoring.label, points))
            else:
                per_trial[(job.checkpoint.path, label, kind)] = {t: payload[str(t)] for t in job.trials}
                report.scorings[kind] = job.scoring.label
                if job.scoring.plain:
                    report.examples[(job.checkpoint.path, label, job.mode)] = payload[str(job.trials[0])]["examples"]
            bar.advance(task)
        bar.update(task, description=f"done: {report.evaluated} evaluated, {report.cached} cached")
    return per_trial


def _evaluate(
    job: _Job,
    cached: dict[str, Any] | None,
    model: Callable[[_Job], LoadedModel],
    vectors: Callable[[_Job], Embedded],
    batch_size: int,
    workers: int,
    progress: Callable[[int, int], None],
) -> tuple[dict[str, Any], dict[str, Image.Image]] | None:
    """The job's payload with what the cache lacks evaluated (ranking, open set: missing trials) and its images
    (by name), or None when the cache has it all; ``progress``: the open set's re-ranking without each identity."""
    if job.mode is None:
        if cached is not None:
            return None
        recovering = model(job) if job.checkpoint.can_recover else None
        return recover_dataset(
            recovering, job.dataset, job.checkpoint.input_size, job.trials, batch_size=batch_size, workers=workers
        )
    todo = [trial for trial in job.trials if str(trial) not in (cached or {})]
    if not todo:
        return None
    if job.open_set:
        computed = open_set_trials(vectors(job), todo, job.scoring, progress)
    else:
        path = str(model(job).path)
        computed = rank_trials(vectors(job), job.dataset, path, job.mode, todo, job.scoring)
    return {**(cached or {}), **computed}, {}


def assemble(
    report: Report,
    per_trial: dict[tuple[str, str, str], dict[int, dict[str, Any]]],
    trials: dict[tuple[str, str], list[int]],
) -> None:
    """The report's rows: per group, dataset, mode and query set the units and their mean; then the paired
    differences of every group against the first on each dataset's main query set."""
    modes = list(dict.fromkeys(mode for _, _, mode in per_trial))
    for group in report.groups:
        for summary in report.datasets:
            evaluated = {c.path: trials.get((c.path, summary.label), []) for c in group.checkpoints}
            pooled = pooling(group, summary.directory, evaluated)
            for mode in modes:
                payloads = {c.path: per_trial.get((c.path, summary.label, mode)) for c in group.checkpoints}
                if not any(payloads.values()):
                    continue
                for query_set in summary.sets:
                    results = {
                        path: {
                            t: EvalResult.from_dict(p["sets"][query_set.key])
                            for t, p in payload.items()
                            if query_set.key in p["sets"]
                        }
                        for path, payload in payloads.items()
                        if payload
                    }
                    units = pool_units(group, pooled.kind, results)
                    if units:
                        text = pooled.text(units, summary.trials_total)
                        result = aggregate_trials(list(units.values()))
                        scoring = report.scorings.get(mode, PLAIN_LABEL)
                        entry = RankingEntry(
                            group, summary.label, mode, query_set.key, query_set.rate, result, units, text, scoring
                        )
                        report.ranking.append(entry)
    report.differences = paired_differences(report.groups, [report.entries(d.label) for d in report.datasets])
