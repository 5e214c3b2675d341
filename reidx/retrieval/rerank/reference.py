"""k-reciprocal re-ranking written as the published algorithm reads, with dense (items x items) arrays: for
tests and the benchmark only (as ``reidx.metrics.reference`` is for ranking). The fast, sparse version is
:mod:`reidx.retrieval.rerank.batch`; change a rule here first.

Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017, and
the authors' released Python code, step by step. The conventions shared with the sparse version (float64
similarities summed the same way for every pair, ties by item id) are in :mod:`reidx.retrieval.rerank.graph`.
"""

from __future__ import annotations

import numpy as np

from reidx.gallery.faiss.exact import float64_dots
from reidx.retrieval.rerank.graph import PUBLISHED, RerankParams


def pair_similarities(items: np.ndarray) -> np.ndarray:
    """All (items x items) float64 similarities, each pair summed as ``exact.float64_dots`` sums it."""
    n = len(items)
    sims = np.empty((n, n))
    cols = np.arange(n)
    for i in range(n):
        sims[i] = float64_dots(items, cols, items, np.full(n, i))
    return sims


def rerank_dense(
    items: np.ndarray,
    queries: int,
    params: RerankParams = PUBLISHED,
    blas: bool = False,
    dtype: type = np.float64,
) -> np.ndarray:
    """Final distances (queries x rest) of the published algorithm on all ``items`` (the first ``queries``
    rows are the probes, the rest the gallery, all in one neighbourhood graph). Similarities and the
    neighbour ranking are float64; ``blas`` takes them from one matrix product instead of pair by pair (for
    the benchmark's sizes; near-equal similarities may then order differently). ``dtype`` is that of the
    distance, V and Jaccard arrays: float32 is the published code's (half the memory)."""
    k1, k2, lam = params.k1, params.k2, params.lam
    sims = items.astype(np.float64) @ items.T.astype(np.float64) if blas else pair_similarities(items)
    n = len(items)
    initial_rank = np.empty((n, n), np.int32)  # ties by item id; by row blocks: no int64 (n x n) array
    for start in range(0, n, 1024):
        initial_rank[start : start + 1024] = np.argsort(-sims[start : start + 1024], axis=1, kind="stable")
    original = sims.astype(dtype, copy=False)  # in place: one (items x items) array fewer
    del sims
    original *= -2.0
    original += 2.0  # eq. 1: 2 - 2s, the squared Euclidean distance of unit vectors
    original /= original.max(1, keepdims=True)  # the published per-row normalisation (d / max_j d)
    v = np.zeros((n, n), dtype)
    half = params.half  # round(k1 / 2), np.around: halves to even
    for i in range(n):
        forward = initial_rank[i, : k1 + 1]  # the k1 + 1 nearest, i itself included (eq. 2)
        backward = initial_rank[forward, : k1 + 1]
        near = forward[np.where(backward == i)[0]]  # R(p, k1), eq. 4
        expansion = near
        for candidate in near:  # eq. 6: R*(p, k1)
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_near = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_near, near)) > 2.0 / 3 * len(c_near):
                expansion = np.append(expansion, c_near)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])  # eq. 7 on the normalised distance
        v[i, expansion] = weight / np.sum(weight)
    original = original[:queries]
    if k2 != 1:  # eq. 11: local query expansion over the k2 nearest (i itself included)
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[initial_rank[i, :k2]], axis=0)
        v = v_qe
        del v_qe
    del initial_rank
    holders = [np.where(v[:, j] != 0)[0] for j in range(n)]  # inverted index
    jaccard = np.zeros_like(original)
    for i in range(queries):  # eq. 10 by min-sum over the shared support
        mins = np.zeros(n, dtype)
        support = np.where(v[i] != 0)[0]
        for j in support:
            mins[holders[j]] += np.minimum(v[i, j], v[holders[j], j])
        jaccard[i] = 1 - mins / (2.0 - mins)
    return (jaccard * (1 - lam) + original * lam)[:, queries:]  # eq. 13


def left_out_dense(
    queries: np.ndarray, gallery: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, params: RerankParams = PUBLISHED
) -> np.ndarray:
    """Per query: its smallest final distance once the gallery items of its pid are removed, by
    :func:`rerank_dense` on the queries and the rest of the gallery, one pid at a time (NaN: none left)."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    best = np.full(len(queries), np.nan)
    for pid in np.unique(q_pids):
        rest = gallery[g_pids != pid]
        if len(rest):
            own = q_pids == pid
            best[own] = rerank_dense(np.concatenate([queries, rest]), len(queries), params)[own].min(1)
    return best
