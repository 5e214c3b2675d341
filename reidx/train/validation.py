"""Validation on held-out TRAINING identities (never the test split).

Per held-out id with at least two cameras, one camera gives the queries, each down-sampled at a rate drawn
from the seen rates; the other cameras' HR images form the gallery. The query camera is the test's when the
test takes every query from one camera (VIPeR's cam_a), else one drawn per id (seeded); ranking uses the
test's protocol (single-shot: seeded gallery draws), so a validation figure estimates the test's. For
CAD-Net the recovered queries are also scored (PSNR against the HR originals, beside the bilinear-upsampled
LR input's PSNR). This module holds only that plan: embedding and recovery scoring are
:mod:`reidx.evaluation`'s, the same paths ``report`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reidx.evaluation.embed import iter_embeddings
from reidx.evaluation.embedders import TorchEmbedder
from reidx.evaluation.recovery import BILINEAR, MODEL, score_recovery
from reidx.metrics import RANKING_SPECS, RECOVERY_SPECS, evaluate_embeddings
from reidx.models import ReidModel

#: Seed-sequence tag of the validation query camera and rate draws.
VAL_QUERY_STREAM = 102
#: The metric table's rows that validation reports (``val_<name>``; recovery also ``val_<name>_bilinear``).
VALIDATION_RANKING = tuple(spec for spec in RANKING_SPECS if spec.validation)
VALIDATION_RECOVERY = tuple(spec for spec in RECOVERY_SPECS if spec.validation)


@dataclass
class ValidationSet:
    """Query (LR, ``rate`` > 1) and gallery (HR, ``rate`` 1) entries from the held-out ids."""

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    rates: np.ndarray
    protocol: str = "multi-shot"
    seed: int = 0

    @property
    def is_query(self) -> np.ndarray:
        return self.rates > 1


def build_validation_set(
    rows: pd.DataFrame,
    rates: list[int],
    seed: int,
    protocol: str = "multi-shot",
    query_camera: int | None = None,
) -> ValidationSet | None:
    """The validation queries and gallery of ``rows`` (path, pid, camid), ranked by ``protocol``; the queries
    come from ``query_camera`` (ids without an image there are left out), or from a seeded camera per id when
    None. None if no id has 2 cameras."""
    rng = np.random.default_rng([seed, VAL_QUERY_STREAM])
    entry_rates = np.ones(len(rows), dtype=np.int64)
    pids, camids = rows["pid"].to_numpy(), rows["camid"].to_numpy()
    for pid in sorted(set(pids.tolist())):
        cameras = sorted(set(camids[pids == pid].tolist()))
        if len(cameras) < 2 or (query_camera is not None and query_camera not in cameras):
            continue
        chosen = cameras[rng.integers(len(cameras))] if query_camera is None else query_camera
        query = (pids == pid) & (camids == chosen)
        entry_rates[query] = rng.choice(rates, size=int(query.sum()))
    if not (entry_rates > 1).any():
        return None
    return ValidationSet(rows["path"].tolist(), pids, camids, entry_rates, protocol, seed)


def run_validation(
    model: ReidModel,
    entries: ValidationSet,
    size: tuple[int, int],
    batch_size: int = 64,
    workers: int = 0,
) -> dict[str, float]:
    """The validation ranking metrics (Rank-1, mAP) of LR queries against the HR gallery; the validation
    recovery metrics (PSNR) of recovered queries."""
    was_training = model.training
    model.eval()
    try:
        embedder = TorchEmbedder(model, size)
        batches = iter_embeddings(embedder, entries.paths, rates=entries.rates, batch_size=batch_size, workers=workers)
        embeddings = np.concatenate(list(batches))
        metrics = {f"val_{name}": value for name, value in rank_queries(embeddings, entries).items()}
        if model.can_recover:
            metrics |= recovery_scores(model, entries, size, batch_size, workers)
    finally:
        model.train(was_training)
    return metrics


def recovery_scores(
    model: ReidModel, entries: ValidationSet, size: tuple[int, int], batch_size: int, workers: int
) -> dict[str, float]:
    """Mean validation recovery scores (PSNR) of G's recovery of the LR queries and of their bilinear
    up-sampling, against the HR originals."""
    queries = [path for path, is_query in zip(entries.paths, entries.is_query, strict=True) if is_query]
    scores = score_recovery(
        model,
        queries,
        queries,
        size,
        rates=entries.rates[entries.is_query],
        lpips=False,
        batch_size=batch_size,
        workers=workers,
    )
    means = {method: scores[method].summary() for method in (MODEL, BILINEAR)}
    return {
        f"val_{spec.name}{'' if method == MODEL else '_' + method}": means[method][spec.name]
        for method in (MODEL, BILINEAR)
        for spec in VALIDATION_RECOVERY
    }


def rank_queries(embeddings: np.ndarray, entries: ValidationSet) -> dict[str, float]:
    """The validation ranking metrics (by ``entries.protocol``) of the queries of ``entries`` against its
    gallery (``embeddings`` in order)."""
    q, g = entries.is_query, ~entries.is_query
    result = evaluate_embeddings(
        embeddings[q],
        embeddings[g],
        entries.pids[q],
        entries.pids[g],
        entries.camids[q],
        entries.camids[g],
        protocol=entries.protocol,
        seed=entries.seed,
    )
    return {spec.name: result.value(spec.name) for spec in VALIDATION_RANKING}


def validation_figures(row: dict[str, float]) -> list[str]:
    """The validation figures of a training log row in words, as ``reidx report`` writes them: "val Rank-1
    83.7%", "mAP 71.2%", "PSNR 23.84 dB", "bilinear PSNR 22.10 dB" (those the row has)."""
    ranking = [
        f"{spec.title or spec.label} {spec.with_unit(row[f'val_{spec.name}'])}"
        for spec in VALIDATION_RANKING
        if f"val_{spec.name}" in row
    ]
    recovery = [
        f"{prefix}{spec.label} {spec.with_unit(row[key])}"
        for prefix, suffix in (("", ""), ("bilinear ", f"_{BILINEAR}"))
        for spec in VALIDATION_RECOVERY
        if (key := f"val_{spec.name}{suffix}") in row
    ]
    return [f"val {text}" if i == 0 else text for i, text in enumerate(ranking)] + recovery
