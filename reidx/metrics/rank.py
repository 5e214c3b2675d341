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

How (no per-query loop): query rows are processed in chunks of about 16M distances, and within a chunk
in groups of rows shared among threads. Every row is cut into runs of 512 entries and each run is sorted,
values only (NumPy sorts short runs several times faster per entry than whole rows). The position of a
same-pid entry in its row's stable order is the number of entries below its distance (a binary search in
every run) plus, only where that distance is tied, the equal entries earlier in the gallery. A true
match's rank among the valid entries is its position minus the removed entries placed before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np
import torch

from reidx.metrics.inputs import MetricInputError, to_numpy

PROTOCOLS = ("multi-shot", "single-shot")
MULTI_SHOT_MAP = "mAP (torchreid/open-reid: mean of the precision at each true match's rank)"
SINGLE_SHOT_MAP = "mAP (single-shot, = mean reciprocal rank)"
DEFAULT_DRAWS = 10
_CHUNK_ELEMENTS = 1 << 24  # distances handled at once; bounds the working memory
_GROUP_ROWS = 64  # query rows looked up together
_RUN = 512  # rows are sorted in runs of this length, which NumPy sorts several times faster per entry than rows


@dataclass(frozen=True, eq=False)
class RankingMetrics(Mapping[str, Any]):
    """CMC and mAP of one evaluation; the fields also read as a mapping (``metrics["cmc"]``).

    ``cmc[k]`` is the fraction of valid queries whose first true match is within rank k + 1. Where
    ``max_rank`` exceeds the gallery, the tail repeats the last value (every valid query is matched by then),
    so ``cmc`` always has ``max_rank`` entries where torchreid would shorten it.
    """

    cmc: np.ndarray
    mAP: float
    num_valid_queries: int
    num_queries: int
    protocol: str
    map_definition: str
    draws: int

    def __getitem__(self, key: str) -> Any:
        if key not in set(self):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in fields(self))

    def __len__(self) -> int:
        return len(fields(self))


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
    num_q, num_g = dist.shape
    rows = max(1, _CHUNK_ELEMENTS // num_g)
    chunks = ((start, dist[start : start + rows]) for start in range(0, num_q, rows))
    return _evaluate_chunks(chunks, (num_q, num_g), q_pids, g_pids, q_camids, g_camids, protocol, max_rank, seed, draws)


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
    gallery = _Gallery.build(_labels("g_pids", g_pids, num_g), _labels("g_camids", g_camids, num_g))
    score: Callable[..., tuple[np.ndarray, np.ndarray]]
    if protocol == "multi-shot":
        score, draws, map_definition = partial(_multi_shot, gallery=gallery), 1, MULTI_SHOT_MAP
    else:
        sampled = _Draws.build(gallery.pids, draws, seed)
        score, map_definition = partial(_single_shot, gallery=gallery, draws=sampled), SINGLE_SHOT_MAP

    results = [
        score(dist, q_pids[start : start + len(dist)], q_camids[start : start + len(dist)]) for start, dist in chunks
    ]
    first = np.concatenate([r[0] for r in results], axis=1)
    ap = np.concatenate([r[1] for r in results], axis=1)
    valid = first[0] >= 0
    if not valid.any():
        raise MetricInputError(
            f"none of the {num_q} queries has a true match in the gallery once gallery entries with the "
            "query's pid and camid are removed",
            "give query and gallery images different camids, or add the query identities to the gallery",
        )
    first, ap = first[:, valid], ap[:, valid]
    hist = np.bincount(np.minimum(first.ravel(), max_rank), minlength=max_rank + 1)[:max_rank]
    return RankingMetrics(
        cmc=np.cumsum(hist) / first.size,
        mAP=float(ap.mean()),
        num_valid_queries=int(valid.sum()),
        num_queries=num_q,
        protocol=protocol,
        map_definition=map_definition,
        draws=draws,
    )


@dataclass(frozen=True)
class _Gallery:
    """Gallery labels, with indices grouped by pid so a query's own-identity entries are found directly."""

    pids: np.ndarray
    camids: np.ndarray
    by_pid: np.ndarray  # gallery indices sorted by pid (stable)

    @classmethod
    def build(cls, pids: np.ndarray, camids: np.ndarray) -> _Gallery:
        return cls(pids, camids, np.argsort(pids, kind="stable"))

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gallery indices of each query's pid, padded to (queries, largest group), and the real ones."""
        sorted_pids = self.pids[self.by_pid]
        left = np.searchsorted(sorted_pids, q_pids, "left")
        counts = np.searchsorted(sorted_pids, q_pids, "right") - left
        slots = np.arange(counts.max(initial=0))
        real = slots < counts[:, None]
        return self.by_pid[np.where(real, left[:, None] + slots, 0)], real


@dataclass(frozen=True)
class _Draws:
    """Seeded single-shot galleries: per draw, a random priority per gallery image, and per identity the
    image with the lowest priority."""

    priority: np.ndarray  # (draws, gallery)
    reps: np.ndarray  # (draws, identities): gallery index of each identity's image, identities sorted by pid
    rep_pids: np.ndarray  # (identities,)

    @classmethod
    def build(cls, pids: np.ndarray, draws: int, seed: int) -> _Draws:
        priority = np.random.default_rng(seed).random((draws, len(pids)))
        reps = []
        for p in priority:
            order = np.lexsort((p, pids))
            group_start = np.r_[True, pids[order][1:] != pids[order][:-1]]
            reps.append(order[group_start])
        return cls(priority, np.stack(reps), np.unique(pids))


def _multi_shot(
    dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the first true match (-1: no valid match) and AP per query row, each shaped (1, rows).

    Every same-pid entry gets its position in the row's stable order; a true match's rank among the valid
    entries is that position minus the removed (same-pid, same-camid) entries placed before it.
    """
    idx, real = gallery.same_pid(q_pids)
    match = real & (gallery.camids[idx] != q_camids[:, None])
    if not match.any():
        return np.full((1, len(dist)), -1), np.zeros((1, len(dist)))
    position = np.where(real, _stable_positions(dist, idx, real), dist.shape[1])
    order = np.argsort(position, axis=1)
    position, match, junk = (np.take_along_axis(a, order, axis=1) for a in (position, match, real & ~match))
    rank = position - (np.cumsum(junk, axis=1) - junk)
    hits = np.cumsum(match, axis=1)
    n = hits[:, -1]
    ap = np.where(match, hits / (rank + 1), 0.0).sum(1) / np.maximum(n, 1)
    first = np.where(n > 0, np.take_along_axis(rank, np.argmax(match, axis=1)[:, None], axis=1)[:, 0], -1)
    return first[None], ap[None]


def _stable_positions(dist: np.ndarray, idx: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of entry ``idx[i, j]`` in row i stably sorted by distance, where ``wanted`` (which must be the
    leading slots of each row). Rows are grouped by their number of wanted slots, so a group is padded
    only to its own widest row, and the groups are shared among torch's thread count of threads."""
    counts = wanted.sum(1)
    order = np.argsort(counts, kind="stable")
    positions = np.zeros(idx.shape, dtype=np.int64)

    def fill(rows: np.ndarray) -> None:
        width = counts[rows].max()
        positions[rows, :width] = _positions(dist[rows], idx[rows, :width], wanted[rows, :width])

    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        list(pool.map(fill, np.array_split(order, -(-len(order) // _GROUP_ROWS))))
    return positions


def _positions(dist: np.ndarray, idx: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``_stable_positions`` for one block of rows."""
    values = np.take_along_axis(dist, idx, axis=1)
    runs = _sorted_runs(dist)
    below, tied = np.empty(values.shape, dtype=np.int64), np.empty(values.shape, dtype=bool)
    block = max(1, _CHUNK_ELEMENTS // (8 * runs.shape[0] * runs.shape[1]))  # bounds the lookup arrays
    for lo in range(0, values.shape[1], block):
        below[:, lo : lo + block], tied[:, lo : lo + block] = _count_below(runs, values[:, lo : lo + block])
    rows, slots = np.nonzero(wanted & tied)
    below[rows, slots] += _earlier_equal(dist, rows, idx[rows, slots], values[rows, slots])
    return below


def _sorted_runs(dist: np.ndarray) -> np.ndarray:
    """Each row cut into runs of ``_RUN`` entries (the last padded with +inf), each run sorted."""
    rows, width = dist.shape
    runs = np.empty((rows, -(-width // _RUN) * _RUN), dtype=dist.dtype)
    runs[:, :width], runs[:, width:] = dist, np.inf
    runs = runs.reshape(rows, -1, _RUN)
    runs.sort(axis=2)
    return runs


def _count_below(runs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value of row i: the entries of row i below it, and whether more than one entry equals it."""
    rows, count, length = runs.shape
    sought = np.repeat(values[:, None, :], count, axis=1)
    below = (
        torch.searchsorted(
            torch.from_numpy(runs.reshape(rows * count, length)), torch.from_numpy(sought.reshape(rows * count, -1))
        )
        .numpy()
        .reshape(sought.shape)
    )
    # a run's entries equal to a value start at ``below``: two runs hold it, or one holds it twice
    held = np.take_along_axis(runs, np.minimum(below, length - 1), axis=2) == sought
    twice = (np.take_along_axis(runs, np.minimum(below + 1, length - 1), axis=2) == sought) & (below + 1 < length)
    return below.sum(1), (held.sum(1) > 1) | twice.any(1)


def _earlier_equal(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each i, how many entries of row ``rows[i]`` left of column ``cols[i]`` equal ``values[i]``."""
    counts = np.empty(len(rows), dtype=np.int64)
    columns = np.arange(dist.shape[1])
    block = max(1, _CHUNK_ELEMENTS // dist.shape[1])
    for lo in range(0, len(rows), block):
        hi = lo + block
        equal = (dist[rows[lo:hi]] == values[lo:hi, None]) & (columns < cols[lo:hi, None])
        counts[lo:hi] = equal.sum(1)
    return counts


def _single_shot(
    dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery, draws: _Draws
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the true match (-1: no valid match) and AP = 1 / (rank + 1), each shaped (draws, rows)."""
    idx, real = gallery.same_pid(q_pids)
    match = real & (gallery.camids[idx] != q_camids[:, None])
    valid = match.any(1)
    first = np.full((len(draws.reps), len(dist)), -1)
    if not valid.any():
        return first, np.zeros(first.shape)
    rows = np.arange(len(dist))
    other_identity = draws.rep_pids[None, :] != q_pids[:, None]
    for d, (priority, reps) in enumerate(zip(draws.priority, draws.reps, strict=True)):
        chosen = idx[rows, np.argmin(np.where(match, priority[idx], np.inf), axis=1)]
        value = dist[rows, chosen][:, None]
        rivals = dist[:, reps]
        before = (rivals < value) | ((rivals == value) & (reps[None, :] < chosen[:, None]))
        first[d] = (before & other_identity).sum(1)
    first[:, ~valid] = -1
    return first, np.where(first >= 0, 1.0 / (first + 1), 0.0)


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
