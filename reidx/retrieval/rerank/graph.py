"""The sparse stages of k-reciprocal re-ranking (Zhong et al., CVPR 2017), over any set of items.

Items are L2-normalised float32 rows. Similarity ``s`` is their inner product computed in float64, every
pair summed the same way (``exact.float64_dots``), so s(i, j) == s(j, i) and equal vectors tie exactly; the
original distance is the squared Euclidean one, d = 2 - 2s (eq. 1 with the Euclidean metric; the published
Python code squares its Euclidean input). Neighbour lists are ranked by s descending, ties by item id
ascending (the published code's unstable ``argsort`` leaves ties unspecified). Each stage works on a set of
rows and reads neighbour lists through a ``lookup`` (ids -> rows of neighbour ids), so the batch form and
the online form (lists patched where a query entered them) share it. Sparse rows are CSR triples
``(ptr, cols, vals)``; nothing here is ever (items x items).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from reidx.errors import ReidxError
from reidx.gallery.faiss.exact import (
    BLOCK_FLOATS,
    QUERY_BLOCK,
    block_candidates,
    float64_dots,
    longest_row,
    rescored,
    rounding_margin,
)

Lookup = Callable[[np.ndarray], np.ndarray]
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # CSR: ptr (rows + 1,), cols, vals
Knn = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids (rows, k), their float64 similarities, farthest similarity
#: Rows handled together by the vectorised stages (bounds their temporaries to a few tens of MB).
ROW_CHUNK = 2048


@dataclass(frozen=True)
class RerankParams:
    """k1, k2 and lambda of the published algorithm (defaults as published: 20, 6, 0.3)."""

    k1: int = 20
    k2: int = 6
    lam: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {self}")

    @property
    def half(self) -> int:
        """round(k1 / 2) as the published code computes it (``np.around``: halves to even, 5 -> 2)."""
        return int(np.around(self.k1 / 2.0))

    def width(self, items: int) -> int:
        """Neighbours kept per item: the k1 + 1 of R(p, k1) or the k2 of the expansion, at most all items."""
        return min(max(self.k1 + 1, self.k2), items)


#: The published parameters (k1 = 20, k2 = 6, lambda = 0.3).
PUBLISHED = RerankParams()


def unit_rows(name: str, vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``vectors`` as C-contiguous float32 rows, refused in one line unless they are finite, 2-D (of width
    ``dim`` where given) and L2-normalised (the original distance 2 - 2s is the squared Euclidean one only
    then)."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        raise ReidxError(f"re-ranking: {name} has shape {array.shape}", f"give (count, {dim or 'dim'}) embeddings")
    norms = np.linalg.norm(array, axis=1)
    if not np.isfinite(norms).all() or (len(norms) and np.abs(norms - 1).max() > 1e-3):
        raise ReidxError(f"re-ranking: {name} are not L2-normalised embeddings", "normalise each row to length 1")
    return array


class BlockStore(Protocol):
    """Where :func:`nearest_and_farthest` keeps the blocks of one pass, so that an interrupted pass resumes
    (:class:`reidx.retrieval.rerank.resume.KnnBlocks`)."""

    def load(self, first: int, count: int) -> Knn | None:
        """The block of queries ``first:first + count`` if kept intact, else None."""

    def save(self, first: int, found: Knn) -> None:
        """Keep the block of queries starting at ``first``."""


#: Makes the store of one pass: ``passes(gallery, queries, k)``.
Passes = Callable[[np.ndarray, np.ndarray, int], BlockStore]


def knn_pass(gallery: np.ndarray, queries: np.ndarray, k: int, passes: Passes | None = None) -> Knn:
    """:func:`nearest_and_farthest`, its blocks kept where ``passes`` says (None: not kept)."""
    return nearest_and_farthest(gallery, queries, k, None if passes is None else passes(gallery, queries, k))


def nearest_and_farthest(gallery: np.ndarray, queries: np.ndarray, k: int, store: BlockStore | None = None) -> Knn:
    """``(ids, sims, far)``: each query's k most similar gallery rows (ranked, ties by id) with their float64
    similarities, and its smallest similarity to any gallery row, in one pass of the exact engine's blocks
    (``reidx.gallery.faiss.exact``: float32 candidates, float64 decides). ``store`` keeps each block of
    queries as it is found and gives back those an earlier, interrupted pass found."""
    norm, dim = longest_row(gallery), gallery.shape[1]
    ids, sims, far = np.empty((len(queries), k), np.int64), np.empty((len(queries), k)), np.empty(len(queries))
    for first in range(0, len(queries), QUERY_BLOCK):
        block = queries[first : first + QUERY_BLOCK]
        found = store.load(first, len(block)) if store is not None else None
        if found is None:
            found = _block_pass(gallery, block, k, norm, dim)
            if store is not None:
                store.save(first, found)
        ids[first : first + len(block)], sims[first : first + len(block)], far[first : first + len(block)] = found
    return ids, sims, far


def _block_pass(gallery: np.ndarray, block: np.ndarray, k: int, norm: float, dim: int) -> Knn:
    """:func:`nearest_and_farthest` of one block of queries."""
    margin = rounding_margin(dim, np.linalg.norm(block, axis=1) * norm)
    width = max(k, BLOCK_FLOATS // len(block))
    near, low = [], []
    for start in range(0, len(gallery), width):
        scores = block @ gallery[start : start + width].T
        near.append(block_candidates(scores, k, margin, start))
        low.append(block_candidates(np.negative(scores, out=scores), 1, margin, start))
    _, ids = rescored(gallery, block, *_joined(near), k, margin)
    _, lowest = rescored(gallery, -block, *_joined(low), 1, margin)
    far = float64_dots(gallery, lowest[:, 0], block, np.arange(len(block)))
    rows = np.repeat(np.arange(len(block)), k)
    return ids, float64_dots(gallery, ids.ravel(), block, rows).reshape(ids.shape), far


def _joined(found: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([s for s, _ in found], 1), np.concatenate([i for _, i in found], 1)


def reciprocal(own: np.ndarray, lookup: Lookup, k: int) -> np.ndarray:
    """R(p, k - 1) of each row p in ``own`` (eq. 4): its first k neighbours (p itself included) whose own
    first k neighbours hold p, as a (rows, k) array of ids with -1 for the others."""
    lists = lookup(own)[:, :k]
    back = lookup(lists.ravel())[:, :k].reshape(len(own), lists.shape[1], lists.shape[1])
    return np.where((back == own[:, None, None]).any(2), lists, -1)


def expanded(own: np.ndarray, lookup: Lookup, half_of: Lookup, params: RerankParams) -> tuple[np.ndarray, np.ndarray]:
    """R*(p, k1) (eq. 6) of each row in ``own``: R(p, k1) plus, for each candidate q in it, all of
    R(q, round(k1/2)) when |R(p, k1) ∩ R(q, round(k1/2))| > 2/3 |R(q, round(k1/2))| (the published
    comparison, in float). ``half_of(ids)`` gives the ids' R(., round(k1/2)) padded with -1. Returns
    ``(counts, members)``: members sorted ascending per row, rows concatenated."""
    near = reciprocal(own, lookup, params.k1 + 1)
    halves = np.where(near[:, :, None] >= 0, half_of(np.maximum(near, 0).ravel()).reshape(*near.shape, -1), -1)
    shared = ((halves[..., None] == near[:, None, None, :]) & (halves[..., None] >= 0)).any(3).sum(2)
    accept = (near >= 0) & (shared > 2.0 / 3 * (halves >= 0).sum(2))
    members = np.concatenate([near, np.where(accept[:, :, None], halves, -1).reshape(len(own), -1)], 1)
    members.sort(1)
    keep = members >= 0
    keep[:, 1:] &= members[:, 1:] != members[:, :-1]
    return keep.sum(1), members[keep]


def weights(
    own: np.ndarray, counts: np.ndarray, members: np.ndarray, far: np.ndarray, pair_sims: Callable
) -> np.ndarray:
    """V_{p, g} (eq. 7) on R*(p): exp(-d(p, g) / max_j d(p, j)) normalised to sum 1 per row. The division by
    the row's largest distance is the published code's (``original_dist / max`` per row before ``exp``);
    ``far`` holds each row's smallest similarity, so max_j d(p, j) = 2 - 2 far."""
    rows = np.repeat(own, counts)
    dmax = np.repeat(2.0 - 2.0 * far, counts)
    w = np.exp(-(2.0 - 2.0 * pair_sims(rows, members)) / dmax)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    return w / np.repeat(np.add.reduceat(w, starts) if len(w) else w, counts)


def gather(table: Rows, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts, cols, vals)`` of the CSR rows ``rows``, in that order."""
    ptr, cols, vals = table
    counts = ptr[rows + 1] - ptr[rows]
    pos = np.repeat(ptr[rows] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    return counts, cols[pos], vals[pos]


def summed(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries with equal (row, col) added up one after the other in their given order (``np.add.at``, as
    the dense reference's loops add them, so equal inputs give equal sums), sorted by row then col."""
    width = int(cols.max(initial=0)) + 1
    keys, group = np.unique(rows * width + cols, return_inverse=True)
    sums = np.zeros(len(keys))
    np.add.at(sums, group, vals)
    return keys // width, keys % width, sums


def expansion(own: np.ndarray, lookup: Lookup, v_rows: Callable, k2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local query expansion (eq. 11): each row's V replaced by the mean of its k2 nearest neighbours'
    (the row itself among them). k2 == 1 leaves V as it is, as the published code does. Returns
    ``(counts, cols, vals)`` sorted by col within each row."""
    if k2 == 1:
        return v_rows(own)
    near = lookup(own)[:, :k2]
    counts, cols, vals = v_rows(near.ravel())
    local = np.repeat(np.repeat(np.arange(len(own)), near.shape[1]), counts)
    rows, cols, sums = summed(local, cols, vals)
    return np.bincount(rows, minlength=len(own)), cols, sums / near.shape[1]


def csr(counts: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> Rows:
    return np.r_[0, np.cumsum(counts)].astype(np.int64), cols, vals


def inverted(table: Rows, columns: int, rows: np.ndarray | None = None) -> Rows:
    """The column-wise (inverted) index of a CSR table: per column, the rows holding it (ascending) and their
    values; ``rows`` (sorted) keeps only those rows."""
    ptr, cols, vals = table
    owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    if rows is not None:
        keep = np.isin(owner, rows)
        owner, cols, vals = owner[keep], cols[keep], vals[keep]
    order = np.argsort(cols, kind="stable")
    return csr(np.bincount(cols, minlength=columns), owner[order], vals[order])


def jaccard_mins(
    q_counts: np.ndarray, q_cols: np.ndarray, q_vals: np.ndarray, index: Rows
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query row and each row sharing support with it: sum_c min(V_q[c], V_g[c]) (the numerator of eq.
    10 through the inverted index, as the published code does). Returns ``(query, row, sum)``, sorted."""
    counts, rows, vals = gather(index, q_cols)
    query = np.repeat(np.repeat(np.arange(len(q_counts)), q_counts), counts)
    return summed(query, rows, np.minimum(np.repeat(q_vals, counts), vals))


def final_distance(sims: np.ndarray, far: np.ndarray | float, lam: float, at: Any, mins: np.ndarray) -> np.ndarray:
    """d* = (1 - lambda) d_J + lambda d / max d (eq. 13 with the published per-row normalised d = (2 - 2s) /
    (2 - 2 far)), where d_J = 1 - m / (2 - m) (eq. 10: the rows of V sum to 1, so sum max = 2 - sum min).
    In place on the float64 similarities ``sims``: every entry first as if m = 0 (d_J = 1), then the entries
    ``at`` (a numpy index into ``sims``, each entry once) with their ``mins``. Each value goes through the
    formula's operations in its order, as when applied to dense arrays, so it is the same to the last bit."""
    np.multiply(sims, 2.0, out=sims)
    np.subtract(2.0, sims, out=sims)
    sims /= 2.0 - 2.0 * far
    sims *= lam
    original = sims[at]
    sims += 1 - lam
    sims[at] = (1 - mins / (2.0 - mins)) * (1 - lam) + original
    return sims
