"""k-reciprocal re-ranking of a query set against a gallery, sparse: the batch form.

As the published evaluation does, queries and gallery form one neighbourhood graph (queries first, so ties
between them and gallery items go to the queries), and only query-to-gallery distances come out. Memory is
O(items x k1 x k2): exact k-NN lists from the exact engine's blocks, R* and V as CSR rows, the expanded V
and its inverted index; final distances are produced a block of query rows at a time (:meth:`Reranked.rows`),
never as (items x items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidx.gallery.faiss.exact import float64_dots
from reidx.retrieval.rerank.graph import (
    PUBLISHED,
    ROW_CHUNK,
    Knn,
    Passes,
    RerankParams,
    Rows,
    csr,
    expanded,
    expansion,
    final_distance,
    gather,
    inverted,
    jaccard_mins,
    knn_pass,
    reciprocal,
    unit_rows,
    weights,
)

#: Query rows whose Jaccard sums are gathered together (bounds the pair lists to a few tens of MB).
JACCARD_CHUNK = 256
#: Final distances in one block of :meth:`Reranked.blocks` (float64: 128 MB, a few such arrays at once).
BLOCK_DISTANCES = 1 << 24


@dataclass(frozen=True)
class Graph:
    """The re-ranking structures of a set of items: k-NN lists, farthest similarity, R(., round(k1/2)),
    V on R* and the expanded V (all rows sparse)."""

    nn: np.ndarray  # (items, width) ids, ranked
    sims: np.ndarray  # (items, width) float64 similarities of those
    far: np.ndarray  # (items,) smallest similarity of each item to any item
    half: np.ndarray  # (items, round(k1/2) + 1) R(., round(k1/2)), -1 padded
    v: Rows  # V on R*, eq. 7
    qe: Rows  # V after query expansion, eq. 11


def build_graph(items: np.ndarray, params: RerankParams, knn: Knn) -> Graph:
    """All re-ranking structures of ``items`` (L2-normalised float32 rows) from their exact k-NN lists ``knn``
    = ``(nn, sims, far)`` (:func:`reidx.retrieval.rerank.graph.knn_pass` over the items, or lists merged by
    ``GalleryRerank.append`` or skipping removed items in :mod:`.left_out`)."""
    n = len(items)
    nn, sims, far = knn

    def lookup(ids: np.ndarray) -> np.ndarray:
        return nn[ids]

    chunks = [np.arange(s, min(s + ROW_CHUNK, n)) for s in range(0, n, ROW_CHUNK)]
    half = np.concatenate([reciprocal(c, lookup, params.half + 1) for c in chunks])

    def half_of(ids: np.ndarray) -> np.ndarray:
        return half[ids]

    def pair_sims(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return float64_dots(items, a, items, b)

    parts = []
    for c in chunks:
        counts, members = expanded(c, lookup, half_of, params)
        parts.append((counts, members, weights(c, counts, members, far[c], pair_sims)))
    v = csr(*(np.concatenate(p) for p in zip(*parts, strict=True)))
    qe = [expansion(c, lookup, lambda ids: gather(v, ids), params.k2) for c in chunks]
    return Graph(nn, sims, far, half, v, csr(*(np.concatenate(p) for p in zip(*qe, strict=True))))


@dataclass(frozen=True)
class Reranked:
    """Re-ranked (queries x gallery) distances, kept sparse: read them by blocks of query rows."""

    queries: np.ndarray
    gallery: np.ndarray
    qe: Rows  # expanded V of the query rows (columns: all items, queries first)
    index: Rows  # inverted index of the gallery rows' expanded V
    far: np.ndarray  # (queries,) smallest similarity of each query to any item
    lam: float
    distinct: np.ndarray  # (distinct gallery vectors, dim) float64, transposed: BLAS reads each once ...
    copies: np.ndarray | None  # (gallery,) ... and each item's column there, so equal items score equal (None: same)
    offset: int  # the graph id of the first gallery item (the number of queries in the graph)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Final distances of query rows ``start:stop`` to every gallery item, float64 (stop - start, gallery)."""
        block = np.arange(start, min(stop, len(self.queries)))
        rows, cols, sums = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0)]  # support entries
        for first in range(0, len(block), JACCARD_CHUNK):
            found = jaccard_mins(*gather(self.qe, block[first : first + JACCARD_CHUNK]), self.index)
            rows.append(first + found[0])
            cols.append(found[1] - self.offset)
            sums.append(found[2])
        sims = self.queries[block].astype(np.float64) @ self.distinct
        if self.copies is not None:
            sims = sims[:, self.copies]
        at = np.concatenate(rows), np.concatenate(cols)
        return final_distance(sims, self.far[block, None], self.lam, at, np.concatenate(sums))

    def blocks(self, rows: int | None = None):
        """``(start, distances)`` for consecutive blocks of query rows (what ``metrics.evaluate`` reads), by
        default about BLOCK_DISTANCES distances a block."""
        rows = rows or max(1, BLOCK_DISTANCES // len(self.gallery))
        for start in range(0, len(self.queries), rows):
            yield start, self.rows(start, start + rows)


def rerank(
    queries: np.ndarray, gallery: np.ndarray, params: RerankParams = PUBLISHED, passes: Passes | None = None
) -> Reranked:
    """The published re-ranking of ``queries`` against ``gallery`` (L2-normalised rows), sparse; ``passes``:
    where the k-NN pass keeps its blocks (:func:`reidx.retrieval.rerank.graph.knn_pass`)."""
    gallery = unit_rows("the gallery", gallery)
    queries = unit_rows("the queries", queries, gallery.shape[1])
    items = np.concatenate([queries, gallery])
    knn = knn_pass(items, items, params.width(len(items)), passes)
    return reranked(build_graph(items, params, knn), queries, gallery, params.lam)


def distinct_rows(gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct, copies)`` of :class:`Reranked`: the distinct gallery rows in order of first appearance,
    float64 and transposed, and each gallery row's column among them (``arange`` where no row repeats)."""
    found, first, inverse = np.unique(gallery, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    column = np.empty_like(order)
    column[order] = np.arange(len(order))
    return found[order].T.astype(np.float64), column[inverse.ravel()]


def reranked(
    graph: Graph,
    queries: np.ndarray,
    gallery: np.ndarray,
    lam: float,
    rows: np.ndarray | None = None,
    distinct: tuple[np.ndarray, np.ndarray] | None = None,
) -> Reranked:
    """The final distances of ``graph`` (built on ``queries`` then ``gallery``) from its query rows ``rows``
    (default: all) to its gallery items; ``distinct`` as :func:`distinct_rows` gives it, where known."""
    offset, items = len(queries), len(queries) + len(gallery)
    rows = np.arange(offset) if rows is None else rows
    index = inverted(graph.qe, items, rows=np.arange(offset, items))
    found, copies = distinct if distinct is not None else distinct_rows(gallery)
    if len(copies) == found.shape[1] and (copies == np.arange(len(copies))).all():
        copies = None  # every gallery row is its own column: no gather
    qe = csr(*gather(graph.qe, rows))
    return Reranked(queries[rows], gallery, qe, index, graph.far[rows], lam, found, copies, offset)
