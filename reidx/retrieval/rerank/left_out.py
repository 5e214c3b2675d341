"""Re-ranked impostor scores for open-set thresholds: each query's smallest re-ranked distance to the gallery
once every gallery item of its identity is removed, the batch graph (all queries and the rest of the
gallery) re-ranked without them.

Removing items changes neighbour lists, R*, V and the expansion well beyond the removed items' neighbours, so
the graph's sparse stages are rebuilt once per query identity. The exact k-NN pass runs once: lists kept
``spare`` entries longer than re-ranking reads (``spare``: the most gallery items one query identity has)
and each item's ``spare + 1`` farthest similarities, so that the reduced set's lists and farthest similarity
are the full set's with the removed items skipped (ids renumbered in order: ties still go to the lower id).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from reidx.retrieval.rerank.batch import build_graph, distinct_rows, reranked
from reidx.retrieval.rerank.graph import PUBLISHED, Knn, RerankParams, nearest_and_farthest, unit_rows


def left_out_distances(
    queries: np.ndarray,
    gallery: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    params: RerankParams = PUBLISHED,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Per query (L2-normalised rows, as :func:`reidx.retrieval.rerank.rerank` takes them): the smallest
    final distance to a gallery item, re-ranked with all gallery items of the query's pid removed; NaN where
    the gallery holds no other pid. ``progress(done, total)`` after each graph re-ranked."""
    gallery = unit_rows("the gallery", gallery)
    queries = unit_rows("the queries", queries, gallery.shape[1])
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    items = np.concatenate([queries, gallery])
    total, offset = len(items), len(queries)
    identities = [(np.flatnonzero(q_pids == pid), offset + np.flatnonzero(g_pids == pid)) for pid in np.unique(q_pids)]
    absent = [rows for rows, removed in identities if not len(removed)]
    identities = [(rows, removed) for rows, removed in identities if len(removed)]
    if absent:  # identities without gallery items: one full graph serves them all
        identities.append((np.concatenate(absent), np.empty(0, np.int64)))
    spare = max((len(removed) for _, removed in identities), default=0)
    nn, sims, _ = nearest_and_farthest(items, items, min(total, params.width(total) + spare))
    lowest, negated, _ = nearest_and_farthest(items, -items, min(total, spare + 1))  # the farthest, negated
    distinct = distinct_rows(gallery)
    best = np.full(offset, np.nan)
    for done, (rows, removed) in enumerate(identities, 1):
        if len(removed) < len(gallery):
            keep = np.ones(total, bool)
            keep[removed] = False
            knn = _skipping(keep, (nn, sims), (lowest, negated), params.width(int(keep.sum())))
            kept = keep[offset:]
            graph = build_graph(items[keep], params, knn=knn)
            found = reranked(graph, queries, gallery[kept], params.lam, rows, (distinct[0], distinct[1][kept]))
            best[rows] = found.rows(0, len(rows)).min(1)
        if progress is not None:
            progress(done, len(identities))
    return best


def _skipping(
    keep: np.ndarray, near: tuple[np.ndarray, np.ndarray], far: tuple[np.ndarray, np.ndarray], width: int
) -> Knn:
    """``(nn, sims, far)`` of the kept items among themselves, from the full set's longer lists ``near``
    (ids, similarities) and farthest items ``far`` (ids, negated similarities), removed items skipped."""
    renumber = np.cumsum(keep) - 1
    lists = near[0][keep]
    order = np.argsort(~keep[lists], axis=1, kind="stable")[:, :width]  # kept entries first, in rank order
    ids = renumber[np.take_along_axis(lists, order, 1)]
    sims = np.take_along_axis(near[1][keep], order, 1)
    farthest = far[0][keep]
    first = np.argmax(keep[farthest], axis=1)
    return ids, sims, -far[1][keep][np.arange(len(first)), first]
