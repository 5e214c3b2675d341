"""Open-set ("not in gallery") operating points: the score threshold at a false-match rate and the true-match
rate at that threshold, from a (queries x gallery) matrix of similarities or distances.

Definitions (open-set identification: the detection-and-identification rate at a false-alarm rate):

- The gallery a query is ranked against is the protocol's (protocols.md §3): entries with the query's pid
  AND camid are removed, as :func:`reidx.metrics.evaluate` removes them (the same ``Gallery`` lookup).
- **Impostor trial**, one per query whose gallery holds any other identity: the query's identity is removed
  from the gallery (all its entries, every camera), so the query is "not in gallery"; its impostor score is
  the best remaining score.
- **Genuine trial**, one per query with at least one true match left: the query is **matched** at threshold
  t when its best-scoring gallery entry (ties by gallery order, as in the ranking metrics) is of its identity
  AND that entry's score passes t.
- A score **passes** t when ``score >= t`` for similarities (higher = closer; the ``--min-score`` rule of
  ``search``) and ``score <= t`` for distances (lower = closer, e.g. re-ranked distances).
- **FMR(t)** = impostor trials whose impostor score passes t / impostor trials. **TMR(t)** = matched genuine
  trials / genuine trials (queries without a true match are not genuine trials, as the ranking metrics skip
  them).
- The threshold **at FMR a** is the most permissive t with FMR(t) <= a (hence the highest TMR there): the
  value next to the (m + 1)-th best impostor score on its rejected side (``np.nextafter`` in the scores'
  dtype), m the largest count with m / impostor trials <= a. The achieved FMR is reported beside it (ties
  among impostor scores can make it lower than a).

The impostor score is read from the given matrix with the identity's columns left out. For plain inner
products that is exactly the score against the gallery without that identity. Scores that depend on the
whole gallery (re-ranked distances, expanded queries) change when the identity leaves it, so for them the
caller scores each query against the gallery without its identity and passes those best scores as
``impostors`` (:func:`best_impostors` reads them from such a matrix).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from reidx.metrics._rank_kernel import Gallery
from reidx.metrics.checks import MetricInputError
from reidx.metrics.rank import _distance_matrix, _labels, checked_blocks, row_blocks

SIMILARITY = "similarity"
DISTANCE = "distance"
KINDS = (SIMILARITY, DISTANCE)
#: The false-match rates reported by default: 1%, 5% and 10%.
DEFAULT_FMRS = (0.01, 0.05, 0.10)
DEFINITION = (
    "open-set identification: FMR = share of queries whose best score passes the threshold once their identity "
    "is removed from the gallery; TMR = share of queries with a true match whose best-scoring gallery entry is "
    "of their identity and passes the threshold; same pid and camid entries removed as in the ranking metrics"
)

ScoreKind = Literal["similarity", "distance"]


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold at one target false-match rate, the FMR it achieves and the TMR there."""

    target_fmr: float
    threshold: float
    fmr: float
    tmr: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set operating points of one score matrix (see the module docstring for the definitions)."""

    kind: str  # "similarity" (pass: score >= threshold) or "distance" (pass: score <= threshold)
    points: tuple[OperatingPoint, ...]
    rank1: float  # closed-set Rank-1 of the genuine trials: the TMR with no threshold
    num_genuine: int
    num_impostor: int
    num_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "passes": "score >= threshold" if self.kind == SIMILARITY else "score <= threshold",
            "definition": DEFINITION,
            "rank1": self.rank1,
            "num_genuine": self.num_genuine,
            "num_impostor": self.num_impostor,
            "num_queries": self.num_queries,
            "points": [point.to_dict() for point in self.points],
        }


def open_set(
    scores: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    kind: ScoreKind,
    fmrs: Sequence[float] = DEFAULT_FMRS,
    impostors: np.ndarray | None = None,
) -> OpenSetResult:
    """Open-set operating points of a dense (queries x gallery) ``scores`` matrix: ``kind="similarity"``
    (higher = closer, e.g. inner products) or ``kind="distance"`` (lower = closer, e.g. re-ranked
    distances); ``impostors`` as :func:`open_set_blocks` takes them. Bad input raises ``MetricInputError``
    saying what is wrong."""
    matrix = _distance_matrix(scores)
    labels = (q_pids, g_pids, q_camids, g_camids)
    return open_set_blocks(row_blocks(matrix), matrix.shape, *labels, kind=kind, fmrs=fmrs, impostors=impostors)


def open_set_blocks(
    blocks: Iterable[tuple[int, Any]],
    shape: tuple[int, int],
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    kind: ScoreKind,
    fmrs: Sequence[float] = DEFAULT_FMRS,
    impostors: np.ndarray | None = None,
) -> OpenSetResult:
    """:func:`open_set` over ``(start, rows)`` blocks of a (queries x gallery) matrix of shape ``shape``,
    consecutive from row 0 (what ``Reranked.blocks()`` yields), never holding the whole matrix.
    ``impostors``: each query's best score against the gallery without its identity, scored apart (NaN
    where none is left), for scores that depend on the whole gallery; by default read from the matrix."""
    if kind not in KINDS:
        raise MetricInputError(f"unknown score kind {kind!r}", f"use one of {', '.join(KINDS)}")
    targets = tuple(float(a) for a in fmrs)
    if not targets or not all(0 < a < 1 for a in targets):
        raise MetricInputError(f"false-match rates must lie strictly between 0 and 1, got {list(fmrs)}")
    num_q, num_g = shape
    q_pids, q_camids = _labels("q_pids", q_pids, num_q), _labels("q_camids", q_camids, num_q)
    gallery = Gallery.build(_labels("g_pids", g_pids, num_g), _labels("g_camids", g_camids, num_g))
    parts = []
    for start, rows in _finite(checked_blocks(blocks, shape, "score")):
        closer = rows if kind == SIMILARITY else np.negative(rows)
        stop = start + len(rows)
        parts.append(_best_scores(closer, q_pids[start:stop], q_camids[start:stop], gallery))
    genuine, correct, impostor = (np.concatenate(column) for column in zip(*parts, strict=True))
    if impostors is not None:
        given = np.asarray(impostors, dtype=impostor.dtype)
        if given.shape != impostor.shape or not np.array_equal(np.isnan(given), np.isnan(impostor)):
            raise MetricInputError(
                f"impostors has shape {given.shape} or NaN where the gallery holds other identities",
                "give one best score per query, NaN exactly where its identity fills the gallery",
            )
        impostor = given if kind == SIMILARITY else np.negative(given)
    return _operating_points(kind, targets, genuine, correct, impostor, num_q)


def best_impostors(
    blocks: Iterable[tuple[int, Any]], shape: tuple[int, int], q_pids: Any, g_pids: Any, *, kind: ScoreKind
) -> np.ndarray:
    """Each query's best score over gallery entries of other identities (NaN: none), from ``(start, rows)``
    blocks as :func:`open_set_blocks` reads them: the ``impostors`` it takes."""
    num_q, num_g = shape
    q_pids = _labels("q_pids", q_pids, num_q)
    gallery = Gallery.build(_labels("g_pids", g_pids, num_g), np.zeros(num_g, np.int64))
    parts = []
    for start, rows in _finite(checked_blocks(blocks, shape, "score")):
        closer = rows if kind == SIMILARITY else np.negative(rows)
        score, _ = _best_other(closer, *_same_pid(gallery, q_pids[start : start + len(rows)]))
        parts.append(score if kind == SIMILARITY else np.negative(score))
    return np.concatenate(parts)


def _finite(blocks: Iterable[tuple[int, np.ndarray]]) -> Iterable[tuple[int, np.ndarray]]:
    for start, rows in blocks:
        if not np.isfinite(rows).all():
            raise MetricInputError("the scores hold inf entries", "check the embeddings and the re-ranking")
        yield start, rows


def _best_scores(
    closer: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: Gallery
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query row of ``closer`` (higher = closer): its best true-match score (NaN: no true match), whether
    its best-ranked entry is a true match, and its best score over other identities (NaN: none)."""
    idx, real = _same_pid(gallery, q_pids)
    match = real & (gallery.camids[idx] != q_camids[:, None])  # the protocol's same pid + same camid removal
    rows = np.arange(len(closer))
    own = np.where(match, np.take_along_axis(closer, idx, axis=1), -np.inf)
    best_slot = np.argmax(own, axis=1)  # first slot of the maximum: lowest gallery index (by_pid is stable)
    has_true = match.any(1)
    true_score, true_index = own[rows, best_slot], idx[rows, best_slot]
    other_score, other_index = _best_other(closer, idx, real)
    has_other = ~np.isnan(other_score)
    correct = has_true & (
        ~has_other | (true_score > other_score) | ((true_score == other_score) & (true_index < other_index))
    )
    return np.where(has_true, true_score, np.nan), correct, other_score


def _same_pid(gallery: Gallery, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Gallery.same_pid``, with one padding slot where no query's identity is in the gallery."""
    idx, real = gallery.same_pid(q_pids)
    if not idx.shape[1]:
        return np.zeros((len(q_pids), 1), np.int64), np.zeros((len(q_pids), 1), bool)
    return idx, real


def _best_other(closer: np.ndarray, idx: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``closer`` (higher = closer): the best score over entries not of the row's pid (``idx`` /
    ``real`` from :func:`_same_pid`; NaN: none) and that entry (ties: the lowest index)."""
    rows = np.arange(len(closer))
    others = closer.copy()
    others[np.repeat(rows, real.sum(1)), idx[real]] = -np.inf
    index = np.argmax(others, axis=1)  # first index of the maximum: ties by gallery order
    score = np.where(real.sum(1) < closer.shape[1], others[rows, index], np.nan)
    return score, index


def _operating_points(
    kind: str, targets: tuple[float, ...], genuine: np.ndarray, correct: np.ndarray, impostor: np.ndarray, num_q: int
) -> OpenSetResult:
    """The operating points from each query's best true-match score, rank-1 correctness and impostor score
    (all oriented higher = closer; NaN where the trial does not exist)."""
    genuine_trial, impostors = ~np.isnan(genuine), impostor[~np.isnan(impostor)]
    if not genuine_trial.any():
        raise MetricInputError(
            f"none of the {num_q} queries has a true match in the gallery once gallery entries with the "
            "query's pid and camid are removed",
            "give query and gallery images different camids, or add the query identities to the gallery",
        )
    if not len(impostors):
        raise MetricInputError(
            "no query has another identity in the gallery: there is no impostor score",
            "add other identities or distractors to the gallery",
        )
    ranked = np.sort(impostors)[::-1]
    n = len(ranked)
    matched = genuine[genuine_trial][correct[genuine_trial]]
    points = []
    for target in targets:
        allowed = int(np.floor(target * n))
        while (allowed + 1) / n <= target:
            allowed += 1
        while allowed / n > target:
            allowed -= 1
        threshold = np.nextafter(ranked[allowed], ranked.dtype.type(np.inf))  # rejects the (allowed+1)-th
        fmr = float(np.count_nonzero(impostors >= threshold)) / n
        tmr = float(np.count_nonzero(matched >= threshold)) / int(genuine_trial.sum())
        value = float(threshold) if kind == SIMILARITY else -float(threshold)
        points.append(OperatingPoint(target, value, fmr, tmr))
    return OpenSetResult(
        kind=kind,
        points=tuple(points),
        rank1=float(correct[genuine_trial].mean()),
        num_genuine=int(genuine_trial.sum()),
        num_impostor=n,
        num_queries=num_q,
    )
