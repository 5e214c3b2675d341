"""The ranking rule every gallery backend follows: score descending, tied scores in gallery order (id
ascending), id -1 (score -inf) where there are fewer hits, and the k a search can give."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: ``search(queries, n) -> (scores, ids)``: n ranked hits per row (ties in gallery order, id -1 when fewer).
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def clamp_k(k: int, count: int) -> int:
    """The hits a search of a gallery of ``count`` entries gives per query when ``k`` are asked for: at least
    one (a row of id -1 for an empty gallery), at most ``count``."""
    return max(1, min(k, count))


def ranked(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows re-ordered by score descending, ties by gallery id ascending (missing ids, -1, last)."""
    missing = ids < 0
    keys = (np.where(missing, np.iinfo(np.int64).max, ids), np.where(missing, np.inf, -scores))
    order = np.lexsort(keys, axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def top_k(search: Search, queries: np.ndarray, k: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``total`` entries per query, equal to a stable descending sort of the similarity row.

    An engine (FAISS, Milvus) orders tied scores its own way and, when a tie straddles the k-th place, keeps
    an arbitrary subset of it. So each row is fetched with one extra hit and :func:`ranked`; a row whose
    (k+1)-th score still equals its k-th is fetched again with twice as many hits until the tie ends.
    """
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    rows, fetch = np.arange(len(queries)), min(k + 1, total)
    while rows.size:
        found_scores, found_ids = ranked(*search(queries[rows], fetch))
        scores[rows], ids[rows] = found_scores[:, :k], found_ids[:, :k]
        if fetch == total:
            break
        tied = (found_ids[:, -1] >= 0) & (found_scores[:, -1] == found_scores[:, k - 1])
        rows, fetch = rows[tied], min(2 * fetch, total)
    return scores, ids
