"""The multi-shot ranking rule of :mod:`reidx.metrics.rank`, written per query to be read, not to be fast.

torchreid's ``eval_market1501`` algorithm from its description: sort each query's row of distances, drop the
gallery entries with the query's pid and camid, CMC from the first true match, AP = the mean of the precision
at each true match's rank, and skip queries without a true match. The tests hold the fast kernel to this
function, and ``benchmarks/bench_metrics.py`` times the kernel against it; change a rule here first.
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
