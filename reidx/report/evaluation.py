"""Evaluate one checkpoint on one prepared dataset: ranking per trial and query set, and HR recovery.

Query sets of a trial (protocols.md §2): "HR" (the queries of the main set replaced by their HR ``source``),
each seen rate alone (the subset of the mixed queries at that rate), the main set ("mixed"), and every
other set the manifest has (unseen rates such as ``r8``; CAVIAR's ``native``). This module holds the plan
(which images form which query set and gallery) and the records; embeddings and recovery scores come from
:mod:`reidx.evaluation` (the paths ``embed``, ``search``, ``recover`` and validation use), CMC/mAP from
:mod:`reidx.metrics` and the example rankings from the search's own ordering.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidx.checkpoint import CheckpointFile, LoadedModel
from reidx.data.manifest import MANIFEST_NAME, DatasetInfo, check_testable, read_dataset
from reidx.data.transforms import to_pil
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths
from reidx.evaluation.recovery import recover_batches, score_recovery
from reidx.gallery.ranking import ranked
from reidx.io import sha256_file
from reidx.metrics import EvalResult, evaluate_embeddings
from reidx.models import list_models, model_class
from reidx.report.cache import dataset_fingerprint
from reidx.report.sources import TrainSource, training_sources

MAX_RANK = 50
MAIN_SET = "mixed"
HR_SET = "hr"
NATIVE_SET = "native"
EXAMPLE_QUERIES = 4
EXAMPLE_HITS = 5
RECOVERY_SAMPLES = 4


#: Trainer options that say where or how fast a run went, not what it learned: never part of a row's recipe.
NOT_RECIPE = frozenset({"dataset", "datasets", "sources", "trial", "trials", "pretrained", "workers", "save_every"})


@dataclass(frozen=True)
class CheckpointInfo:
    """What the report says about a checkpoint, read once and cached (no model is built for it)."""

    path: str
    fingerprint: str
    model: str
    arch: str
    modes: tuple[str, ...]
    can_recover: bool
    input_size: tuple[int, int]
    init: str  # "ImageNet" | "scratch" | "unknown"
    sources: tuple[TrainSource, ...] = ()  # what it trained on (empty = unknown)
    recipe: dict[str, Any] = field(default_factory=dict)  # the trainer's options but NOT_RECIPE ({} = unknown)
    epoch: int | None = None  # the epoch the weights are from

    @property
    def name(self) -> str:
        """``run/file.pt``."""
        path = Path(self.path)
        return f"{path.parent.name}/{path.name}"

    @property
    def trained_on(self) -> str:
        """The training sources in words ("" when unknown)."""
        return " + ".join(source.text for source in self.sources)

    @property
    def label(self) -> str:
        trained = f"; trained on {self.trained_on}" if self.sources else ""
        return f"{self.name} [{self.model}, {self.arch}, {self.init}{trained}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointInfo:
        sources = tuple(TrainSource(**source) for source in data.get("sources", ()))
        data = dict(data, modes=tuple(data["modes"]), input_size=tuple(data["input_size"]), sources=sources)
        return cls(**data)


def describe_checkpoint(checkpoint: CheckpointFile) -> CheckpointInfo:
    """Model family, embedding modes, input size, initialisation, recipe and training sources recorded in a
    checkpoint."""
    config = checkpoint.model_config
    training = training_config(checkpoint)
    if config["name"] not in list_models():
        raise ReidxError(
            f"{checkpoint.path} holds an unknown model {config['name']!r}", "evaluate it with the reidx that wrote it"
        )
    family = model_class(config["name"])
    epoch = checkpoint.meta.get("epoch")
    return CheckpointInfo(
        path=str(checkpoint.path.resolve()),
        fingerprint=checkpoint.fingerprint,
        model=config["name"],
        arch=str(config.get("arch", "?")),
        modes=tuple(family.embedding_modes),
        can_recover=bool(family.can_recover),
        input_size=checkpoint.input_size,
        init=initialisation(training),
        sources=training_sources(checkpoint.meta, training),
        recipe={key: value for key, value in training.items() if key not in NOT_RECIPE},
        epoch=epoch if isinstance(epoch, int) else None,
    )


def training_config(checkpoint: CheckpointFile) -> dict[str, Any]:
    """The trainer's options recorded in the checkpoint; a version 1 ``best.pt`` (weights only) falls back to
    the run record (``config.json``) beside it; empty when neither is there."""
    config: Any = checkpoint.train_config
    record = checkpoint.path.parent / "config.json"
    if not config and record.is_file():
        try:
            config = json.loads(record.read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            config = None
    return config if isinstance(config, dict) else {}


def initialisation(training: dict[str, Any]) -> str:
    """ImageNet / scratch / unknown, from the trainer's ``pretrained`` option."""
    pretrained = training.get("pretrained")
    if pretrained is None:
        return "unknown"
    return "ImageNet" if pretrained else "scratch"


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


@dataclass(frozen=True)
class QuerySet:
    """One set of queries of one trial; ``rate`` is its single down-sampling rate (1 for HR), else None."""

    key: str
    label: str
    rates: tuple[int, ...]
    rate: int | None
    rows: pd.DataFrame
    main: bool = False


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
        sets.append(QuerySet(HR_SET, "HR", (1,), 1, hr))
    for name in names:
        rows = queries[queries["query_set"] == name]
        drawn = tuple(sorted(int(r) for r in rows["rate"].unique()))
        rates = tuple(dataset.info.rates) if name == MAIN_SET else drawn
        label = set_label(name, drawn, dataset.info)
        if len(rates) > 1:
            for rate in drawn:
                subset = rows[rows["rate"] == rate]
                sets.append(QuerySet(f"{name}@{rate}", f"LR {rate} (of {name})", (rate,), rate, subset))
        single = rates[0] if len(rates) == 1 and rates[0] > 1 else None
        sets.append(QuerySet(name, label, rates, single, rows, main=name == main_name))
    return sets


def gallery_rows(dataset: EvalDataset, trial: int) -> pd.DataFrame:
    """The gallery of ``trial``."""
    frame = dataset.frame
    return frame[(frame["split"] == "gallery") & (frame["trial"] == trial)]


def trial_seed(info: DatasetInfo, trial: int) -> int:
    """The single-shot gallery-draw seed of a trial: the dataset's seed plus the trial number."""
    return info.seed + trial


def rank_trials(
    loaded: LoadedModel, dataset: EvalDataset, mode: str, trials: list[int], *, batch_size: int = 64, workers: int = 2
) -> dict[str, Any]:
    """Per trial: an :class:`EvalResult` (as a dict) per query set and a few ranked lists for the montage."""
    plans = {trial: (gallery_rows(dataset, trial), query_sets(dataset, trial)) for trial in trials}
    paths = list(
        dict.fromkeys(
            path
            for gallery, sets in plans.values()
            for rows in [gallery, *(s.rows for s in sets)]
            for path in rows["path"]
        )
    )
    vectors = embed_paths(loaded, paths, mode, batch_size, workers)
    row_of = {path: i for i, path in enumerate(paths)}

    def features(rows: pd.DataFrame) -> np.ndarray:
        return vectors[[row_of[path] for path in rows["path"]]]

    out: dict[str, Any] = {}
    for trial, (gallery, sets) in plans.items():
        g_feats = features(gallery)
        results = {}
        for query_set in sets:
            metrics = evaluate_embeddings(
                features(query_set.rows),
                g_feats,
                query_set.rows["pid"].to_numpy(),
                gallery["pid"].to_numpy(),
                query_set.rows["camid"].to_numpy(),
                gallery["camid"].to_numpy(),
                protocol=dataset.info.protocol,
                max_rank=MAX_RANK,
                seed=trial_seed(dataset.info, trial),
            )
            record = EvalResult.from_metrics(
                metrics,
                dataset=dataset.info.dataset,
                query_set=query_set.label,
                rates=query_set.rates,
                checkpoint=str(loaded.path),
                mode=mode,
            )
            results[query_set.key] = record.to_dict()
        main = next(s for s in sets if s.main)
        out[str(trial)] = {
            "sets": results,
            "examples": ranked_examples(features(main.rows), g_feats, main.rows, gallery),
        }
    return out


def ranked_examples(q_feats: np.ndarray, g_feats: np.ndarray, queries: pd.DataFrame, gallery: pd.DataFrame) -> list:
    """The top gallery hits (by inner product, ties by gallery order) of a few evenly spread queries; gallery
    images of the query's identity and camera are left out, as the evaluation leaves them out."""
    picks = np.unique(np.linspace(0, len(queries) - 1, min(EXAMPLE_QUERIES, len(queries))).round().astype(int))
    g_pids, g_camids = gallery["pid"].to_numpy(), gallery["camid"].to_numpy()
    examples = []
    for i in picks:
        query = queries.iloc[i]
        (scores,), (order,) = ranked((g_feats @ q_feats[i])[None], np.arange(len(gallery))[None])
        kept = ~((g_pids[order] == query["pid"]) & (g_camids[order] == query["camid"]))
        scores, order = scores[kept][:EXAMPLE_HITS], order[kept][:EXAMPLE_HITS]
        hits = [
            {
                "index": int(j),
                "path": str(gallery["path"].iloc[j]),
                "pid": int(gallery["pid"].iloc[j]),
                "camid": int(gallery["camid"].iloc[j]),
                "score": float(score),
            }
            for j, score in zip(order, scores, strict=True)
        ]
        examples.append(
            {"query": str(query["path"]), "pid": int(query["pid"]), "camid": int(query["camid"]), "hits": hits}
        )
    return examples


def recovery_pairs(dataset: EvalDataset, trials: list[int]) -> dict[str, pd.DataFrame]:
    """Per LR query set with an HR original: its distinct (LR path, HR source) pairs over ``trials``."""
    frame = dataset.frame
    queries = frame[(frame["split"] == "query") & (frame["path"] != frame["source"]) & frame["trial"].isin(trials)]
    return {
        name: rows.drop_duplicates(["path", "source"])[["path", "source", "rate"]].reset_index(drop=True)
        for name, rows in queries.groupby("query_set", sort=True)
    }


def recover_dataset(
    loaded: LoadedModel | None,
    dataset: EvalDataset,
    input_size: tuple[int, int],
    trials: list[int],
    *,
    batch_size: int = 64,
    workers: int = 2,
) -> dict[str, Any]:
    """SSIM/PSNR/LPIPS vs the HR originals at ``input_size``, pixels in [0, 1], per LR query set, for G's output
    (``loaded``; None for a model that does not recover) and for the bilinear up-sampled LR input.

    Also a few recovered images (PNG, base64) of the main set for the recovery grid.
    """
    pairs = recovery_pairs(dataset, trials)
    names = list(pairs)
    out: dict[str, Any] = {"sets": {}, "samples": []}
    model = loaded.model if loaded else None
    for name, rows in pairs.items():
        scores = score_recovery(
            model, list(rows["path"]), list(rows["source"]), input_size, batch_size=batch_size, workers=workers
        )
        rates = tuple(sorted(int(r) for r in rows["rate"].unique()))
        out["sets"][name] = {
            "label": set_label(name, rates, dataset.info),
            "count": len(rows),
            **{method: {**result.summary(), "lpips_reason": result.lpips_reason} for method, result in scores.items()},
        }
    if loaded and names:
        out["samples"] = recovery_samples(loaded, pairs[main_set_name(names)], input_size)
    return out


def recovery_samples(loaded: LoadedModel, rows: pd.DataFrame, input_size: tuple[int, int]) -> list[dict[str, str]]:
    """A few evenly spread (LR path, HR path, rate, recovered image as base64 PNG) samples."""
    picks = np.unique(np.linspace(0, len(rows) - 1, min(RECOVERY_SAMPLES, len(rows))).round().astype(int))
    chosen = rows.iloc[picks]
    batch = next(recover_batches(loaded.model, list(chosen["path"]), input_size, batch_size=len(chosen), workers=0))
    samples = []
    for (_, row), tensor in zip(chosen.iterrows(), batch.recovered, strict=True):
        buffer = io.BytesIO()
        to_pil(tensor).save(buffer, format="PNG")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        samples.append({"lr": row["path"], "hr": row["source"], "rate": int(row["rate"]), "recovered": encoded})
    return samples
