"""Evaluate one checkpoint on one prepared dataset: ranking per trial and query set, and HR recovery.

The plan (which images form which query set and gallery) is :mod:`reidx.report.plan`'s; this module holds the
checkpoint's description and the evaluation's payloads. Embeddings and recovery scores come from
:mod:`reidx.evaluation` (the paths ``embed``, ``search``, ``recover`` and validation use), the metrics from
:mod:`reidx.metrics` and the example rankings from the search's own ordering.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from reidx.checkpoint import CheckpointFile, LoadedModel
from reidx.data.transforms import to_pil
from reidx.evaluation.embed import embed_paths
from reidx.evaluation.recovery import recover_batches, score_recovery
from reidx.gallery.ranking import ranked
from reidx.metrics import EvalResult
from reidx.models import model_class
from reidx.report.plan import (
    EvalDataset,
    QuerySet,
    evenly_spread,
    gallery_rows,
    main_set_name,
    query_sets,
    recovery_pairs,
    set_label,
    trial_seed,
)
from reidx.report.scoring import PLAIN, Scoring, open_set_points, ranking_metrics
from reidx.report.sources import TrainSource, training_sources
from reidx.retrieval.search import Hit, QueryResult

MAX_RANK = 50
EXAMPLE_QUERIES = 4
EXAMPLE_HITS = 5
RECOVERY_SAMPLES = 4
#: The reference method of the recovery tables.
METHOD_BILINEAR = "bilinear up-sampling of the LR input (reference)"


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
    family = model_class(config["name"])  # a known model: open_checkpoint refuses any other
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
class Embedded:
    """One checkpoint's embeddings, in one mode, of every image the given trials of a dataset read."""

    plans: dict[int, tuple[pd.DataFrame, list[QuerySet]]]  # per trial: its gallery and query sets
    vectors: np.ndarray
    row_of: dict[str, int]

    def features(self, rows: pd.DataFrame) -> np.ndarray:
        return self.vectors[[self.row_of[path] for path in rows["path"]]]


def embed_trials(
    loaded: LoadedModel, dataset: EvalDataset, mode: str, trials: list[int], *, batch_size: int = 64, workers: int = 2
) -> Embedded:
    """Embed the gallery and query images of ``trials`` once: every scoring ranks these same vectors."""
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
    return Embedded(plans, vectors, {path: i for i, path in enumerate(paths)})


def rank_trials(
    embedded: Embedded, dataset: EvalDataset, checkpoint: str, mode: str, trials: list[int], scoring: Scoring = PLAIN
) -> dict[str, Any]:
    """Per trial: an :class:`EvalResult` (as a dict) per query set under ``scoring``, and (plain) a few ranked
    lists for the montage."""
    out: dict[str, Any] = {}
    for trial in trials:
        gallery, sets = embedded.plans[trial]
        g_feats = embedded.features(gallery)
        results = {}
        for query_set in sets:
            metrics = ranking_metrics(
                scoring,
                embedded.features(query_set.rows),
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
                checkpoint=checkpoint,
                mode=mode,
            )
            results[query_set.key] = record.to_dict()
        main = next(s for s in sets if s.main)
        examples = ranked_examples(embedded.features(main.rows), g_feats, main.rows, gallery) if scoring.plain else []
        out[str(trial)] = {"sets": results, "examples": examples}
    return out


def open_set_trials(
    embedded: Embedded, trials: list[int], scoring: Scoring, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Per trial: the open-set operating points of ``scoring`` on the main query set (as a dict); ``progress``
    as :func:`reidx.report.scoring.open_set_points` takes it."""
    out: dict[str, Any] = {}
    for trial in trials:
        gallery, sets = embedded.plans[trial]
        main = next(s for s in sets if s.main)
        labels = (main.rows["pid"], gallery["pid"], main.rows["camid"], gallery["camid"])
        features = (embedded.features(main.rows), embedded.features(gallery))
        result = open_set_points(scoring, *features, tuple(c.to_numpy() for c in labels), progress)
        out[str(trial)] = result.to_dict()
    return out


def ranked_examples(
    q_feats: np.ndarray, g_feats: np.ndarray, queries: pd.DataFrame, gallery: pd.DataFrame
) -> list[dict[str, Any]]:
    """The top gallery hits (by inner product, ties by gallery order) of a few evenly spread queries, as search
    results (``QueryResult.to_dict()``); gallery images of the query's identity and camera are left out, as
    the evaluation leaves them out."""
    g_pids, g_camids = gallery["pid"].to_numpy(), gallery["camid"].to_numpy()
    examples = []
    for i in evenly_spread(EXAMPLE_QUERIES, len(queries)):
        query = queries.iloc[i]
        (scores,), (order,) = ranked((g_feats @ q_feats[i])[None], np.arange(len(gallery))[None])
        kept = ~((g_pids[order] == query["pid"]) & (g_camids[order] == query["camid"]))
        scores, order = scores[kept][:EXAMPLE_HITS], order[kept][:EXAMPLE_HITS]
        hits = [
            Hit(
                rank,
                int(j),
                str(gallery["path"].iloc[j]),
                float(score),
                int(gallery["pid"].iloc[j]),
                int(gallery["camid"].iloc[j]),
                True,
            )
            for rank, (j, score) in enumerate(zip(order, scores, strict=True), start=1)
        ]
        result = QueryResult(str(query["path"]), int(query["pid"]), int(query["camid"]), hits)
        examples.append(result.to_dict())
    return examples


def recover_dataset(
    loaded: LoadedModel | None,
    dataset: EvalDataset,
    input_size: tuple[int, int],
    trials: list[int],
    *,
    batch_size: int = 64,
    workers: int = 2,
) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """The recovery metrics of the metric table vs the HR originals at ``input_size``, pixels in [0, 1], per LR
    query set, for G's output (``loaded``; None for a model that does not recover) and for the bilinear
    up-sampled LR input; and a few recovered images of the main set for the recovery grid: the payload's
    ``samples`` name them, the images (by name) come second, to be cached as PNG files.
    """
    pairs = recovery_pairs(dataset, trials)
    names = list(pairs)
    out: dict[str, Any] = {"sets": {}, "samples": []}
    images: dict[str, Image.Image] = {}
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
        out["samples"], images = recovery_samples(loaded, pairs[main_set_name(names)], input_size)
    return out, images


def recovery_samples(
    loaded: LoadedModel, rows: pd.DataFrame, input_size: tuple[int, int]
) -> tuple[list[dict[str, Any]], dict[str, Image.Image]]:
    """A few evenly spread samples (LR path, HR path, rate, the name of the recovered image) and the images."""
    chosen = rows.iloc[evenly_spread(RECOVERY_SAMPLES, len(rows))]
    batch = next(recover_batches(loaded.model, list(chosen["path"]), input_size, batch_size=len(chosen), workers=0))
    samples, images = [], {}
    for i, ((_, row), tensor) in enumerate(zip(chosen.iterrows(), batch.recovered, strict=True)):
        name = f"sample-{i}"
        images[name] = to_pil(tensor)
        samples.append({"lr": row["path"], "hr": row["source"], "rate": int(row["rate"]), "recovered": name})
    return samples, images
