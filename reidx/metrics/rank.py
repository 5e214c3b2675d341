"""Ranking metrics (CMC and mAP) under reidx's two protocols (protocols.md §3), exact and vectorised.

multi-shot
    The open-reid / torchreid ``eval_market1501`` rule. Per query, gallery entries with the query's pid AND
    camid are removed; CMC counts the rank of the first true match; AP is the mean of the precision at each
    remaining true match's rank (the torchreid / open-reid AP, not the Market-1501 trapezoid rule); a query
    with no remaining true match is skipped.
single-shot
    The SING / MLR convention. Each draw keeps one gallery image per gallery identity (distractor pid 0
    counts as one identity), chosen by a seeded NumPy Generator; draws are repeated ``draws`` times and CMC
    and mAP are averaged over them. The same-camera rule is applied first: a query's own identity is
    represented by one of its images on another camera (the rule removes nothing else). With one true match
    per gallery, AP is the reciprocal rank, so mAP is the mean reciprocal rank.

Ties in distance are broken by gallery order, as a stable sort would, so results are deterministic.

The readable per-query statement of these rules is :mod:`reidx.metrics.reference` (the tests hold this
module to it); the vectorised kernel that computes them is :mod:`reidx.metrics._rank_kernel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch

from reidx.metrics._rank_kernel import PER_QUERY, Draws, Gallery, multi_shot, single_shot
from reidx.metrics.checks import MetricInputError, to_numpy
from reidx.metrics.table import RANKING_SPECS, spec

PROTOCOLS = ("multi-shot", "single-shot")
MULTI_SHOT_MAP = "mAP (torchreid/open-reid: mean of the precision at each true match's rank)"
SINGLE_SHOT_MAP = "mAP (single-shot, = mean reciprocal rank)"
DEFAULT_DRAWS = 10
_CHUNK_ELEMENTS = 1 << 24  # distances handled at once; bounds the working memory


@dataclass(frozen=True, eq=False)
class RankingMetrics(Mapping[str, Any]):
    """CMC and the per-query means (``scores``: mAP and the table's other ranking metrics) of one evaluation;
    fields and scores also read as a mapping (``metrics["cmc"]``, ``metrics["mAP"]``), a score as an
    attribute (``metrics.mAP``).

    ``cmc[k]`` is the fraction of valid queries whose first true match is within rank k + 1. Where
    ``max_rank`` exceeds the gallery, the tail repeats the last value (every valid query is matched by then),
    so ``cmc`` always has ``max_rank`` entries where torchreid would shorten it.
    """

    cmc: np.ndarray
    scores: dict[str, float]
    num_valid_queries: int
    num_queries: int
    protocol: str
    map_definition: str
    draws: int

    def value(self, name: str) -> float:
        """Metric ``name`` of the table: its rank of the CMC, or its per-query mean."""
        rank = spec(name).cmc_rank
        return float(self.cmc[rank - 1]) if rank else self.scores[name]

    def __getattr__(self, name: str) -> float:
        scores = self.__dict__.get("scores", {})
        if name in scores:
            return scores[name]
        raise AttributeError(name)

    def __getitem__(self, key: str) -> Any:
        if key not in set(self):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        for item in fields(self):
            yield from self.scores if item.name == "scores" else (item.name,)

    def __len__(self) -> int:
        return len(fields(self)) - 1 + len(self.scores)


def evaluate(
    distmat: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    protocol: str = "multi-shot",
    max_rank: int = 50,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> RankingMetrics:
    """CMC and mAP from a (queries x gallery) distance matrix, smaller = closer.

    ``seed`` and ``draws`` only matter for single-shot. Bad input raises ``MetricInputError`` (a
    ``ValueError``) saying what is wrong.
    """
    dist = _distance_matrix(distmat)
    return _evaluate_chunks(
        row_blocks(dist), dist.shape, q_pids, g_pids, q_camids, g_camids, protocol, max_rank, seed, draws
    )


def row_blocks(matrix: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` blocks of ``matrix`` of about ``_CHUNK_ELEMENTS`` elements each, from row 0."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, matrix.shape[1]))
    return ((start, matrix[start : start + rows]) for start in range(0, len(matrix), rows))


def evaluate_blocks(
    blocks: Iterable[tuple[int, Any]],
    shape: tuple[int, int],
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    protocol: str = "multi-shot",
    max_rank: int = 50,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> RankingMetrics:
    """:func:`evaluate` over ``(start, distances)`` blocks of a (queries x gallery) distance matrix of shape
    ``shape``, consecutive from row 0 (what ``Reranked.blocks()`` yields), never holding the whole matrix."""
    checked = checked_blocks(blocks, shape, "distance")
    return _evaluate_chunks(checked, shape, q_pids, g_pids, q_camids, g_camids, protocol, max_rank, seed, draws)


def checked_blocks(
    blocks: Iterable[tuple[int, Any]], shape: tuple[int, int], what: str
) -> Iterator[tuple[int, np.ndarray]]:
    """``blocks`` of a (queries x gallery) ``what`` matrix of ``shape``, each as a checked float array; blocks
    that are not consecutive from row 0, of another width, or that do not cover every row raise
    ``MetricInputError``."""
    num_q, num_g = shape
    done = 0
    for start, block in blocks:
        rows = _distance_matrix(block)
        if start != done or rows.shape[1] != num_g or done + len(rows) > num_q:
            raise MetricInputError(
                f"{what} block at row {start} has shape {rows.shape}; expected consecutive blocks of a "
                f"({num_q}, {num_g}) matrix, the next starting at row {done}"
            )
        done += len(rows)
        yield start, rows
    if done != num_q:
        raise MetricInputError(f"the {what} blocks cover {done} of {num_q} query rows")


def evaluate_embeddings(
    q_feats: np.ndarray | torch.Tensor,
    g_feats: np.ndarray | torch.Tensor,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    protocol: str = "multi-shot",
    max_rank: int = 50,
    chunk_size: int | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
) -> RankingMetrics:
    """CMC and mAP from L2-normalised embeddings, never holding the whole distance matrix.

    Similarity is the inner product (as in the FAISS index) and the distance is its negation, so the result
    equals ``evaluate(-(q_feats @ g_feats.T), ...)``. Queries are processed ``chunk_size`` rows at a time
    (default: about 16M distances per chunk); the products run on the features' device.
    """
    q = _features("q_feats", q_feats)
    g = _features("g_feats", g_feats).to(q.device)
    if q.shape[1] != g.shape[1]:
        raise MetricInputError(
            f"q_feats has dimension {q.shape[1]} but g_feats has {g.shape[1]}",
            "embed query and gallery with the same model",
        )
    if chunk_size is not None and chunk_size < 1:
        raise MetricInputError(f"chunk_size must be at least 1, got {chunk_size}")
    rows = chunk_size or max(1, _CHUNK_ELEMENTS // len(g))
    chunks = _negated_similarities(q, g, rows)
    return _evaluate_chunks(
        chunks, (len(q), len(g)), q_pids, g_pids, q_camids, g_camids, protocol, max_rank, seed, draws
    )


def _negated_similarities(q: torch.Tensor, g: torch.Tensor, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    gt = g.T
    for start in range(0, len(q), rows):
        yield start, torch.matmul(q[start : start + rows], gt).neg_().cpu().numpy()


def _evaluate_chunks(
    chunks: Iterable[tuple[int, np.ndarray]],
    shape: tuple[int, int],
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    protocol: str,
    max_rank: int,
    seed: int,
    draws: int,
) -> RankingMetrics:
    num_q, num_g = shape
    if protocol not in PROTOCOLS:
        raise MetricInputError(f"unknown protocol {protocol!r}", f"use one of {', '.join(PROTOCOLS)}")
    if max_rank < 1 or draws < 1:
        raise MetricInputError(f"max_rank and draws must be at least 1, got {max_rank} and {draws}")
    q_pids, q_camids = _labels("q_pids", q_pids, num_q), _labels("q_camids", q_camids, num_q)
    gallery = Gallery.build(_labels("g_pids", g_pids, num_g), _labels("g_camids", g_camids, num_g))
    score: Callable[..., tuple[np.ndarray, np.ndarray]]
    if protocol == "multi-shot":
        score, draws, map_definition = partial(multi_shot, gallery=gallery), 1, MULTI_SHOT_MAP
    else:
        sampled = Draws.build(gallery.pids, draws, seed)
        score, map_definition = partial(single_shot, gallery=gallery, draws=sampled), SINGLE_SHOT_MAP

    results = [
        score(dist, q_pids[start : start + len(dist)], q_camids[start : start + len(dist)]) for start, dist in chunks
    ]
    first = np.concatenate([r[0] for r in results], axis=1)
    per_query = {name: np.concatenate([r[i] for r in results], axis=1) for i, name in enumerate(PER_QUERY, 1)}
    valid = first[0] >= 0
    if not valid.any():
        raise MetricInputError(
            f"none of the {num_q} queries has a true match in the gallery once gallery entries with the "
            "query's pid and camid are removed",
            "give query and gallery images different camids, or add the query identities to the gallery",
        )
    first = first[:, valid]
    hist = np.bincount(np.minimum(first.ravel(), max_rank), minlength=max_rank + 1)[:max_rank]
    means = [spec.name for spec in RANKING_SPECS if spec.cmc_rank is None]
    return RankingMetrics(
        cmc=np.cumsum(hist) / first.size,
        scores={name: float(per_query[name][:, valid].mean()) for name in means},
        num_valid_queries=int(valid.sum()),
        num_queries=num_q,
        protocol=protocol,
        map_definition=map_definition,
        draws=draws,
    )


def _distance_matrix(distmat: Any) -> np.ndarray:
    d = to_numpy(distmat)
    if d.ndim != 2:
        raise MetricInputError(f"distmat must be 2-D (queries x gallery), got shape {d.shape}")
    if 0 in d.shape:
        raise MetricInputError(f"distmat has shape {d.shape}: the query or gallery set is empty")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise MetricInputError(f"distmat must hold numbers, got dtype {d.dtype}")
    d = np.ascontiguousarray(d, dtype=np.float32 if d.dtype in (np.float16, np.float32) else np.float64)
    if np.isnan(d.max()):  # max propagates NaN: one fast pass
        raise MetricInputError(
            f"distmat has {int(np.isnan(d).sum())} NaN entries", "check the embeddings for NaN or inf"
        )
    return d


def _features(name: str, feats: Any) -> torch.Tensor:
    x = feats if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats))
    if x.ndim != 2 or 0 in x.shape:
        raise MetricInputError(f"{name} must be a non-empty 2-D (items x dim) array, got shape {tuple(x.shape)}")
    x = x.detach()
    if x.dtype != torch.float64:
        x = x.float()
    rows = max(1, _CHUNK_ELEMENTS // x.shape[1])  # checked in blocks: isfinite on the whole would copy it
    if not all(torch.isfinite(block).all() for block in x.split(rows)):
        raise MetricInputError(f"{name} has NaN or inf entries", "check the model's outputs")
    return x


def _labels(name: str, values: Any, length: int) -> np.ndarray:
    a = to_numpy(values)
    if a.shape != (length,):
        raise MetricInputError(
            f"{name} has shape {a.shape}, expected ({length},) to match the distances",
            "pass one pid and one camid per query row and per gallery column",
        )
    if not np.issubdtype(a.dtype, np.integer):
        raise MetricInputError(f"{name} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)
