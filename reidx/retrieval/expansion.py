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
    queries, gallery = _rows("queries", queries), _rows("gallery", gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise ReidxError(
            f"query expansion: the queries have dimension {queries.shape[1]} but the gallery {gallery.shape[1]}",
            "embed queries and gallery with the same model",
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ReidxError(f"query expansion: K must be a whole number >= 0, got {k!r}", "give K = 0 (off) or more")
    k = min(int(k), len(gallery))
    if k == 0 or not len(queries):
        return queries.copy()
    _, ids = exact_top_k(gallery, queries, k, longest_row(gallery))
    out = np.empty_like(queries)
    step = max(1, GATHER_FLOATS // (k * queries.shape[1]))
    for start in range(0, len(queries), step):
        own = queries[start : start + step].astype(np.float64)
        total = own + gallery[ids[start : start + step]].astype(np.float64).sum(1)
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
