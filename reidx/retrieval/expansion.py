"""Average query expansion (AQE): each query replaced by the L2-normalised mean of itself and its K nearest
gallery items (Chum et al., "Total Recall", ICCV 2007, in its average form as re-ID toolkits apply it).

Neighbours are the exact inner-product top-K of the exact engine (:func:`reidx.gallery.faiss.exact.exact_top_k`:
gallery blocks, float64 decides, ties by gallery id ascending), so no (queries x gallery) array is held at
any gallery size. Means are summed in float64, a block of queries at a time.
"""

from __future__ import annotations

import numpy as np

from reidx.errors import ReidxError
from reidx.gallery.faiss.exact import exact_top_k, longest_row

#: Floats of gathered neighbour vectors (queries x K x dim) summed at once: 4 Mi float64 = 32 MB.
GATHER_FLOATS = 4 * 1024 * 1024


def average_query_expansion(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """The expanded queries, float32 (queries, dim): each query row q becomes
    ``(q + g_1 + ... + g_K) / |q + g_1 + ... + g_K|``, where g_1..g_K are its K gallery rows of highest inner
    product (ties by gallery row ascending; a gallery row equal to q counts like any other).

    ``k = 0`` returns the queries unchanged; ``k`` larger than the gallery uses the whole gallery. Where the
    sum is the zero vector (the neighbours cancel the query exactly), the query is kept unchanged. Rows of
    ``queries`` and ``gallery`` should be L2-normalised (the neighbours are by inner product); they must be
    finite, 2-D and of one width, else a one-line ``ReidxError``.
    """
    queries, gallery = _checked(queries, gallery, k)
    k = min(int(k), len(gallery))
    if k == 0 or not len(queries):
        return queries.copy()
    _, ids = exact_top_k(gallery, queries, k, longest_row(gallery))
    return _averaged(queries, gallery, ids, np.ones(ids.shape, bool))


def left_out_expansion(
    queries: np.ndarray, gallery: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, k: int
) -> np.ndarray:
    """:func:`average_query_expansion` with each query's K neighbours drawn from the gallery without the
    query's pid (fewer where fewer are left): how a query of an identity absent from the gallery is expanded
    (the open-set impostor trial). Equal to ``average_query_expansion(q, gallery[g_pids != pid], k)`` for the
    queries of each pid."""
    queries, gallery = _checked(queries, gallery, k)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    if k == 0 or not len(queries) or not len(gallery):
        return queries.copy()
    own = np.unique(g_pids, return_counts=True)
    spare = int(own[1][np.isin(own[0], q_pids)].max(initial=0))
    _, ids = exact_top_k(gallery, queries, min(len(gallery), int(k) + spare), longest_row(gallery))
    others = g_pids[ids] != q_pids[:, None]
    order = np.argsort(~others, axis=1, kind="stable")[:, : min(int(k), ids.shape[1])]  # other pids first, ranked
    return _averaged(queries, gallery, np.take_along_axis(ids, order, 1), np.take_along_axis(others, order, 1))


def _checked(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    queries, gallery = _rows("queries", queries), _rows("gallery", gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise ReidxError(
            f"query expansion: the queries have dimension {queries.shape[1]} but the gallery {gallery.shape[1]}",
            "embed queries and gallery with the same model",
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ReidxError(f"query expansion: K must be a whole number >= 0, got {k!r}", "give K = 0 (off) or more")
    return queries, gallery


def _averaged(queries: np.ndarray, gallery: np.ndarray, ids: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Each query plus its gallery rows ``ids`` where ``used``, summed in float64 in rank order, L2-normalised
    (kept unchanged where the sum is zero)."""
    out = np.empty_like(queries)
    step = max(1, GATHER_FLOATS // (max(1, ids.shape[1]) * queries.shape[1]))
    for start in range(0, len(queries), step):
        own = queries[start : start + step].astype(np.float64)
        near = gallery[ids[start : start + step]].astype(np.float64)
        total = own + np.where(used[start : start + step, :, None], near, 0.0).sum(1)
        norms = np.linalg.norm(total, axis=1, keepdims=True)
        out[start : start + step] = np.where(norms > 0, total / np.where(norms > 0, norms, 1), own)
    return out


def _rows(name: str, vectors: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ReidxError(f"query expansion: the {name} have shape {array.shape}", "give (count, dim) embeddings")
    if not all(np.isfinite(array[s : s + 65536]).all() for s in range(0, len(array), 65536)):
        raise ReidxError(f"query expansion: the {name} hold NaN or inf", "check the model's outputs")
    return array
