"""The multi-shot ranking rule of :mod:`reidx.metrics.rank`, written per query to be read, not to be fast.

torchreid's ``eval_market1501`` algorithm from its description: sort each query's row of distances, drop the
gallery entries with the query's pid and camid, CMC from the first true match, AP = the mean of the precision
at each true match's rank, and skip queries without a true match. mINP (Ye et al., "Deep Learning for
Person Re-identification: A Survey and Outlook", TPAMI 2021) is stated here too, for both protocols (the
kernel computes it). The tests hold the fast kernel to these functions,
and ``benchmarks/bench_metrics.py`` times the kernel against it; change a rule here first.
"""

from __future__ import annotations

import numpy as np


def multi_shot_reference(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    kind: str = "stable",
) -> tuple[np.ndarray, float, int]:
    """``(cmc, mAP, valid queries)`` of a (queries x gallery) distance matrix, smaller = closer.

    ``kind="stable"`` breaks ties by gallery order (reidx's rule); ``"quicksort"`` is torchreid's own call.
    The CMC is padded with its last value up to ``max_rank`` (every valid query is matched by then).
    """
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    order = np.argsort(distmat, axis=1, kind=kind)
    cmcs, aps = [], []
    for i in range(len(distmat)):
        ranked = order[i]
        keep = ~((g_pids[ranked] == q_pids[i]) & (g_camids[ranked] == q_camids[i]))
        hits = (g_pids[ranked][keep] == q_pids[i]).astype(np.float64)
        if not hits.any():
            continue
        cmc = np.minimum(hits.cumsum(), 1.0)
        cmcs.append(np.pad(cmc, (0, max(0, max_rank - len(cmc))), mode="edge")[:max_rank])
        precision = hits.cumsum() / np.arange(1, len(hits) + 1)
        aps.append((precision * hits).sum() / hits.sum())
    return np.mean(cmcs, axis=0), float(np.mean(aps)), len(aps)


def multi_shot_minp_reference(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> tuple[float, int]:
    """``(mINP, valid queries)`` under the multi-shot rule: per query, INP = |true matches| / the rank (from
    1, among the entries left after removing same pid and camid) of the hardest, i.e. last, true match.
    Ties by gallery order; queries without a true match are skipped."""
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    inps = []
    for i in range(len(distmat)):
        ranked = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[ranked] == q_pids[i]) & (g_camids[ranked] == q_camids[i]))
        hits = np.flatnonzero(g_pids[ranked][keep] == q_pids[i])
        if len(hits):
            inps.append(len(hits) / (hits[-1] + 1))
    return float(np.mean(inps)), len(inps)


def single_shot_minp_reference(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    draws: int = 10,
    seed: int = 0,
) -> float:
    """mINP under the single-shot rule (protocols.md §3), averaged over draws and valid queries. Per draw, a
    seeded priority per gallery image (``default_rng(seed).random((draws, gallery))``, as the evaluator
    draws it) keeps each identity's lowest-priority image; the query's own identity is represented by its
    lowest-priority image on another camera. The one true match is the last, so INP = 1 / its rank."""
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    priority = np.random.default_rng(seed).random((draws, len(g_pids)))
    inps = []
    for p in priority:
        for i in range(len(distmat)):
            true = np.flatnonzero((g_pids == q_pids[i]) & (g_camids != q_camids[i]))
            if not len(true):
                continue
            chosen = true[np.argmin(p[true])]
            kept = [chosen]
            for pid in np.unique(g_pids[g_pids != q_pids[i]]):
                same = np.flatnonzero(g_pids == pid)
                kept.append(same[np.argmin(p[same])])
            kept = np.sort(kept)  # gallery order, so the stable sort breaks ties by it
            ranked = kept[np.argsort(distmat[i, kept], kind="stable")]
            inps.append(1.0 / (np.flatnonzero(ranked == chosen)[0] + 1))
    return float(np.mean(inps))
